"""SCEP end to end, as an operator runs it: ``certfleet ca serve --scep-port`` (on 127.0.0.1 and
::1), the controller, a worker process and the device simulator, each its own process, with
real Redis and PostgreSQL.

60 devices enroll over SCEP through the API (the CA certificate first, then the identity);
every certificate is checked against the CA; re-enroll (RenewalReq), refresh and delete follow.
A CA that speaks only 3DES and SHA-1 is refused with the weak-crypto error until the operator
enables weak-crypto on the devices (confirmed) and re-enrolls. A request the CA holds stays
pending, the devices polling every retry period, until an operator approves it; a refresh then
shows the certificate."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from services.ca_sim.authority import CaPaths
from services.ca_sim.scep_transactions import TransactionStore, transactions_db
from services.cli.api_client import ApiError, CertfleetClient
from shared.protocols.scep import transaction_id_for
from tests.support.ca_peers import spki, write_pem
from tests.support.pg import fresh_database, postgres_or_skip
from tests.support.procs import Proc, Stack, ca_ready_urls, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/8"
DEVICES = 60
CHALLENGE = "E2e-Scep-Challenge-53"
#: Seconds in a SCEP retry minute: devices poll a held request every 0.5 s.
MINUTE = "0.5"


class ScepWorld:
    def __init__(self, ca: Proc, ca_dir: Path, urls: list[str], stack: Stack) -> None:
        self.ca, self.ca_dir, self.stack = ca, ca_dir, stack
        self.v4_url = urls[0]
        self.v6_url = next((u for u in urls if u.startswith("http://[::1]")), None)
        self.issuing, self.root = x509.load_pem_x509_certificates((ca_dir / "ca-chain.pem").read_bytes())
        self.client = CertfleetClient(stack.api_url, stack.token)

    def logs(self) -> str:
        return "".join(p.output() for p in [self.ca, *self.stack.procs])

    def renewal_recorded(self, cert: x509.Certificate, renewed: x509.Certificate) -> bool:
        """Whether the CA issued ``cert`` for a RenewalReq signed with ``renewed``."""
        store = TransactionStore(transactions_db(CaPaths(self.ca_dir)))
        found = store.find("default", transaction_id_for(cert.public_key()),
                           renews=format(renewed.serial_number, "x"))
        return found is not None and found.certificate() == cert


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    postgres_or_skip()
    logs = tmp_path_factory.mktemp("e2e-scep")
    ca_dir = logs / "ca"
    hosts = ["--host", "127.0.0.1"] + (["--host", "::1"] if socket.has_ipv6 else [])
    env = {**os.environ, "CERTFLEET_CA_SCEP_CHALLENGE": CHALLENGE, "CERTFLEET_LOG_LEVEL": "WARNING"}
    serve = ["ca", "serve", "--state-dir", str(ca_dir), "--est-port", "0", "--scep-port", "0", *hosts]
    ca = Proc("ca", serve, env, logs)
    try:
        urls = ca_ready_urls(ca)["scep"]
        redis.Redis.from_url(REDIS_URL).flushdb()
        with fresh_database() as database_url:
            with Stack(database_url=database_url, broker_url=REDIS_URL, log_dir=logs, devices=DEVICES, workers=1,
                       sim_args=["--scep-minute-seconds", MINUTE, "--ca-wait-seconds", "1"]) as stack:
                w = ScepWorld(ca, ca_dir, urls, stack)
                assert w.client.import_devices(stack.sim_url)["imported"] == DEVICES
                yield w
                w.client.close()
    finally:
        ca.stop()
        redis.Redis.from_url(REDIS_URL).flushdb()


def scep_object(client: CertfleetClient, name: str, url: str, **fields) -> dict:
    return client.create_enrollment_object(**{
        "name": name, "enrollment_type": "scep", "enrollment_url": url, "challenge_password": CHALLENGE,
        "key_type": "rsa", "key_size": 2048, "common_name": "", "organization": "Example Corp",
        "organizational_unit": "NetOps", "country": "US", "include_fqdn": True, **fields,
    })


def install(client: CertfleetClient, devices: list[dict], obj: dict) -> list[dict]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda d: client.add_trustpoint(d["id"], obj["id"]), devices))
    for answer in answers:
        assert answer["job"]["state"] in ("queued", "running", "succeeded", "failed")
    return [a["job"] for a in answers]


def wait_until_settled(client: CertfleetClient, name: str, total: int, timeout: float = 120) -> Counter:
    deadline = time.monotonic() + timeout
    counts: Counter = Counter()
    while time.monotonic() < deadline:
        counts = Counter(t["identity_status"] for t in client.trustpoints() if t["name"] == name)
        if counts["available"] + counts["failed"] >= total:
            return counts
        time.sleep(0.5)
    raise AssertionError(f"SCEP enrollment did not settle within {timeout} s: {counts}")


def wait_for_jobs(client: CertfleetClient, job_ids: list[str], timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [client.job(j) for j in job_ids]
        if all(j["state"] in ("succeeded", "failed") for j in jobs):
            return jobs
        time.sleep(0.3)
    raise AssertionError(f"jobs did not finish within {timeout} s")


def check_enrolled(w: ScepWorld, devices: list[dict], name: str, tmp_path: Path
                   ) -> dict[str, x509.Certificate]:
    """Every trustpoint is available with the CA's chain (SCEP's GetCACert serves the issuing CA
    and the root) and a certificate the CA issued for the requested key and subject; returns the
    identity certificates by device id."""
    issued = {}
    for device in devices:
        tp = w.client.trustpoint(device["id"], name)
        assert (tp["ca_status"], tp["identity_status"]) == ("available", "available"), tp["error_message"]
        assert [c["fingerprint_sha256"] for c in tp["ca_certificates"]] == [
            w.issuing.fingerprint(hashes.SHA256()).hex(), w.root.fingerprint(hashes.SHA256()).hex()]
        cert = x509.load_pem_x509_certificate(tp["identity_certificate"]["pem"].encode())
        cert.verify_directly_issued_by(w.issuing)
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device["fqdn"]
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "NetOps"
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example Corp"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [device["fqdn"]]
        issued[device["id"]] = cert
    assert len({spki(c.public_key()) for c in issued.values()}) == len(issued), "a key pair per device"
    # openssl checks every chain in one run: the root as trust anchor, the issuing CA as intermediate.
    files = [write_pem(tmp_path / f"{name}-{i}.pem", cert) for i, cert in enumerate(issued.values())]
    done = subprocess.run(["openssl", "verify", "-CAfile", str(w.ca_dir / "ca" / "root.pem"), "-untrusted",
                           str(w.ca_dir / "ca" / "issuing.pem"), *map(str, files)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.count(": OK") == len(files), done.stdout + done.stderr
    return issued


def test_a_fleet_enrolls_over_scep_then_re_enroll_refresh_and_delete(world, tmp_path):
    w, client = world, world.client
    devices = client.devices()
    obj = scep_object(client, "vpn-scep", w.v4_url + "/", retry_period_minutes=1, retry_count=5)
    assert "challenge_password" not in obj and obj["has_secret"] is True
    install(client, devices, obj)
    counts = wait_until_settled(client, "vpn-scep", DEVICES)
    assert counts == Counter(available=DEVICES), counts
    issued = check_enrolled(w, devices, "vpn-scep", tmp_path)

    # Re-enroll five devices (a new key pair each, over RenewalReq), refresh one, delete one.
    renewed, refreshed, deleted = devices[:5], devices[5], devices[6]
    jobs = [client.trustpoint_action(d["id"], "vpn-scep", "re-enroll")["job"]["id"] for d in renewed]
    jobs.append(client.trustpoint_action(refreshed["id"], "vpn-scep", "refresh")["job"]["id"])
    jobs.append(client.trustpoint_action(deleted["id"], "vpn-scep", "delete")["job"]["id"])
    finished = wait_for_jobs(client, jobs)
    assert [j["state"] for j in finished] == ["succeeded"] * len(jobs), [j["error_message"] for j in finished]
    again = check_enrolled(w, renewed + [refreshed], "vpn-scep", tmp_path)
    for device in renewed:
        old, new = issued[device["id"]], again[device["id"]]
        assert new.serial_number != old.serial_number and spki(new.public_key()) != spki(old.public_key())
        assert new.subject == old.subject
        assert w.renewal_recorded(new, old), "the device renewed with its current certificate (RenewalReq)"
    assert again[refreshed["id"]] == issued[refreshed["id"]]
    with pytest.raises(ApiError) as gone:
        client.trustpoint(deleted["id"], "vpn-scep")
    assert gone.value.status == 404
    on_device = httpx.get(f"{w.stack.sim_url}/api/devices/{deleted['serial']}/trustpoints/vpn-scep",
                          timeout=10)
    assert on_device.json()["code"] == "trustpoint_not_found"

    # The challenge went to the devices only: no log line, job step or API answer shows it.
    assert CHALLENGE not in w.logs()
    for job in finished:
        assert CHALLENGE not in str(job)


def test_a_legacy_ca_is_refused_for_weak_crypto_until_the_operator_enables_it(world):
    w, client = world, world.client
    devices = client.devices()[10:13]
    obj = scep_object(client, "vpn-legacy", w.v4_url + "/legacy-des/scep", key_type="ecdsa", key_size=256)
    jobs = install(client, devices, obj)
    assert [j["state"] for j in wait_for_jobs(client, [j["id"] for j in jobs])] == ["failed"] * len(devices)
    for device in devices:
        tp = client.trustpoint(device["id"], "vpn-legacy")
        assert (tp["ca_status"], tp["identity_status"]) == ("available", "failed")
        assert tp["error_code"] == "weak_crypto"
        message = tp["error_message"]
        assert f"{device['serial']}, trustpoint vpn-legacy: weak crypto: 3DES-CBC and SHA-1" in message
        assert message.endswith("enable weak-crypto on the device to accept it")

    # Enabling weak-crypto needs a confirmation, as the seed's "Click Yes" does.
    with pytest.raises(ApiError) as unconfirmed:
        client.update_device(devices[0]["id"], weak_crypto=True)
    assert (unconfirmed.value.status, unconfirmed.value.code) == (409, "weak_crypto_confirmation_required")
    for device in devices:
        assert client.update_device(device["id"], weak_crypto=True, confirm=True)["weak_crypto"] is True
    jobs = [client.trustpoint_action(d["id"], "vpn-legacy", "re-enroll")["job"]["id"] for d in devices]
    finished = wait_for_jobs(client, jobs)
    assert [j["state"] for j in finished] == ["succeeded"] * len(devices), [
        j["error_message"] for j in finished]
    for device in devices:
        tp = client.trustpoint(device["id"], "vpn-legacy")
        assert (tp["ca_status"], tp["identity_status"], tp["error_code"]) == ("available", "available", None)
        cert = x509.load_pem_x509_certificate(tp["identity_certificate"]["pem"].encode())
        cert.verify_directly_issued_by(w.issuing)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device["fqdn"]


def test_a_held_request_over_ipv6_is_pending_until_approved_then_a_refresh_shows_it(world, tmp_path):
    w, client = world, world.client
    url = w.v6_url or w.v4_url  # the IPv6 literal in brackets where the host has ::1
    device = client.devices()[20]
    obj = scep_object(client, "vpn-approval", url + "/ms2012-manual/scep", retry_count=100)
    job = client.add_trustpoint(device["id"], obj["id"])["job"]
    assert wait_for_jobs(client, [job["id"]])[0]["state"] == "succeeded"
    tp = client.trustpoint(device["id"], "vpn-approval")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "pending")
    assert len(tp["ca_certificates"]) == 2 and tp["identity_certificate"] is None

    listed = run_cli(["ca", "requests", "--state-dir", str(w.ca_dir)], w.stack.env)
    (request_id,) = [line.split()[0] for line in listed.splitlines() if device["fqdn"] in line]
    assert f"approved {request_id}" in run_cli(["ca", "approve", "--state-dir", str(w.ca_dir), request_id],
                                                w.stack.env)
    # The device polls the CA every retry period by itself; a refresh shows what it has.
    deadline = time.monotonic() + 20
    while tp["identity_status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.5)
        refresh = client.trustpoint_action(device["id"], "vpn-approval", "refresh")["job"]
        assert wait_for_jobs(client, [refresh["id"]])[0]["state"] == "succeeded"
        tp = client.trustpoint(device["id"], "vpn-approval")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "available")
    check_enrolled(w, [device], "vpn-approval", tmp_path)
