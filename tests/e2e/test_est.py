"""EST end to end, as an operator runs it: ``certfleet ca serve`` (on 127.0.0.1 and ::1), the
controller, a worker process and the device simulator (trusting the CA's TLS root), each
its own process, with real Redis and PostgreSQL. 60 devices enroll over EST through the API;
every certificate is checked against the CA; re-enroll, refresh and delete follow; then 20
devices enroll again with the enrollment URL as the IPv6 literal https://[::1]:P/."""

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
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.cli.api_client import ApiError, CertfleetClient
from tests.support.ca_peers import spki, write_pem
from tests.support.pg import fresh_database, postgres_or_skip
from tests.support.procs import Proc, Stack, ca_ready_urls, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/10"
DEVICES = 60
IPV6_DEVICES = 20
USER, PASSWORD = "ftd-enroller", "E2e-Est-Secret-31"


class EstWorld:
    def __init__(self, ca: Proc, ca_dir: Path, urls: list[str], stack: Stack) -> None:
        self.ca, self.ca_dir, self.stack = ca, ca_dir, stack
        self.v4_url = urls[0]
        self.v6_url = next((u for u in urls if u.startswith("https://[::1]")), None)
        chain = x509.load_pem_x509_certificates((ca_dir / "ca-chain.pem").read_bytes())
        self.issuing, self.root = chain
        self.client = CertfleetClient(stack.api_url, stack.token)

    def logs(self) -> str:
        return "".join(p.output() for p in [self.ca, *self.stack.procs])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    postgres_or_skip()
    logs = tmp_path_factory.mktemp("e2e-est")
    ca_dir = logs / "ca"
    hosts = ["--host", "127.0.0.1"] + (["--host", "::1"] if socket.has_ipv6 else [])
    env = {**os.environ, "CERTFLEET_CA_EST_PASSWORD": PASSWORD, "CERTFLEET_LOG_LEVEL": "WARNING"}
    serve = ["ca", "serve", "--state-dir", str(ca_dir), "--est-port", "0", *hosts, "--est-user", USER]
    ca = Proc("ca", serve, env, logs)
    try:
        urls = ca_ready_urls(ca)["est"]
        redis.Redis.from_url(REDIS_URL).flushdb()
        with fresh_database() as database_url:
            with Stack(database_url=database_url, broker_url=REDIS_URL, log_dir=logs, devices=DEVICES, workers=1,
                       sim_args=["--trust-anchor", str(ca_dir / "tls-ca.pem")]) as stack:
                w = EstWorld(ca, ca_dir, urls, stack)
                assert w.client.import_devices(stack.sim_url)["imported"] == DEVICES
                yield w
                w.client.close()
    finally:
        ca.stop()
        redis.Redis.from_url(REDIS_URL).flushdb()


def est_object(client: CertfleetClient, name: str, url: str) -> dict:
    return client.create_enrollment_object(
        name=name, enrollment_type="est", enrollment_url=url, username=USER, password=PASSWORD,
        key_type="ecdsa", key_size=256, common_name="", organization="Example Corp",
        organizational_unit="NetOps", country="US", include_fqdn=True,
    )


def install(client: CertfleetClient, devices: list[dict], obj: dict) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        for answer in pool.map(lambda d: client.add_trustpoint(d["id"], obj["id"]), devices):
            assert answer["job"]["state"] in ("queued", "running", "succeeded")


def wait_until_settled(client: CertfleetClient, name: str, total: int, timeout: float = 120) -> Counter:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = Counter(t["identity_status"] for t in client.trustpoints() if t["name"] == name)
        if counts["available"] + counts["failed"] >= total:
            return counts
        time.sleep(0.5)
    raise AssertionError(f"EST enrollment did not settle within {timeout} s: {counts}")


def wait_for_jobs(client: CertfleetClient, job_ids: list[str], timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [client.job(j) for j in job_ids]
        if all(j["state"] in ("succeeded", "failed") for j in jobs):
            return jobs
        time.sleep(0.3)
    raise AssertionError(f"jobs did not finish within {timeout} s")


def check_enrolled(w: EstWorld, devices: list[dict], name: str, tmp_path: Path
                   ) -> dict[str, x509.Certificate]:
    """Every trustpoint is available with the CA's chain and a certificate the CA issued for the
    requested key and subject; returns the identity certificates by device id."""
    issued = {}
    for device in devices:
        tp = w.client.trustpoint(device["id"], name)
        assert (tp["ca_status"], tp["identity_status"]) == ("available", "available"), tp["error_message"]
        assert [c["fingerprint_sha256"] for c in tp["ca_certificates"]] == [
            w.issuing.fingerprint(hashes.SHA256()).hex(), w.root.fingerprint(hashes.SHA256()).hex()]
        cert = x509.load_pem_x509_certificate(tp["identity_certificate"]["pem"].encode())
        cert.verify_directly_issued_by(w.issuing)
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size == 256
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device["fqdn"]
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "NetOps"
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example Corp"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [device["fqdn"]]
        issued[device["id"]] = cert
    assert len({spki(c.public_key()) for c in issued.values()}) == len(issued), "a key pair per device"
    # openssl checks every chain in one run: the root as trust anchor, the issuing CA as intermediate.
    files = [write_pem(tmp_path / f"{name}-{i}.pem", cert) for i, cert in enumerate(issued.values())]
    done = subprocess.run(["openssl", "verify", "-CAfile", str(w.ca_dir / "tls-ca.pem"), "-untrusted",
                           str(w.ca_dir / "ca-chain.pem"), *map(str, files)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.count(": OK") == len(files), done.stdout + done.stderr
    return issued


def test_a_fleet_enrolls_over_est_then_re_enroll_refresh_and_delete(world, tmp_path):
    w, client = world, world.client
    devices = client.devices()
    obj = est_object(client, "vpn-est", w.v4_url + "/")
    assert "password" not in obj and obj["has_secret"] is True
    install(client, devices, obj)
    counts = wait_until_settled(client, "vpn-est", DEVICES)
    assert counts == Counter(available=DEVICES), counts
    issued = check_enrolled(w, devices, "vpn-est", tmp_path)

    # Re-enroll five devices (a new key pair each), refresh one, delete one.
    renewed, refreshed, deleted = devices[:5], devices[5], devices[6]
    jobs = [client.trustpoint_action(d["id"], "vpn-est", "re-enroll")["job"]["id"] for d in renewed]
    jobs.append(client.trustpoint_action(refreshed["id"], "vpn-est", "refresh")["job"]["id"])
    jobs.append(client.trustpoint_action(deleted["id"], "vpn-est", "delete")["job"]["id"])
    finished = wait_for_jobs(client, jobs)
    assert [j["state"] for j in finished] == ["succeeded"] * len(jobs), [j["error_message"] for j in finished]
    again = check_enrolled(w, renewed + [refreshed], "vpn-est", tmp_path)
    for device in renewed:
        old, new = issued[device["id"]], again[device["id"]]
        assert new.serial_number != old.serial_number and spki(new.public_key()) != spki(old.public_key())
        assert new.subject == old.subject
    assert again[refreshed["id"]] == issued[refreshed["id"]]
    with pytest.raises(ApiError) as gone:
        client.trustpoint(deleted["id"], "vpn-est")
    assert gone.value.status == 404
    on_device = httpx.get(f"{w.stack.sim_url}/api/devices/{deleted['serial']}/trustpoints/vpn-est",
                          timeout=10)
    assert on_device.json()["code"] == "trustpoint_not_found"

    # The password went to the devices only: no log line, job step or API answer shows it.
    assert PASSWORD not in w.logs()
    for job in finished:
        assert PASSWORD not in str(job)


def test_enrollment_url_as_an_ipv6_literal(world, tmp_path):
    w, client = world, world.client
    if w.v6_url is None:
        pytest.skip("no IPv6 loopback here")
    assert w.v6_url.startswith("https://[::1]:")
    devices = client.devices()[:IPV6_DEVICES]
    install(client, devices, est_object(client, "vpn-est6", w.v6_url + "/"))
    counts = wait_until_settled(client, "vpn-est6", IPV6_DEVICES)
    assert counts == Counter(available=IPV6_DEVICES), counts
    check_enrolled(w, devices, "vpn-est6", tmp_path)


def test_a_request_the_ca_holds_is_pending_until_approved_then_a_refresh_shows_it(world, tmp_path):
    w, client = world, world.client
    device = client.devices()[10]
    obj = est_object(client, "vpn-approval", w.v4_url + "/.well-known/est/ms2012-manual/")
    job = client.add_trustpoint(device["id"], obj["id"])["job"]
    assert wait_for_jobs(client, [job["id"]])[0]["state"] == "succeeded"
    tp = client.trustpoint(device["id"], "vpn-approval")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "pending")
    assert len(tp["ca_certificates"]) == 2 and tp["identity_certificate"] is None

    # The operator approves the request on the CA, as the CA's 202 answer says.
    listed = run_cli(["ca", "requests", "--state-dir", str(w.ca_dir)], w.stack.env)
    (request_id,) = [line.split()[0] for line in listed.splitlines() if device["fqdn"] in line]
    assert f"approved {request_id}" in run_cli(["ca", "approve", "--state-dir", str(w.ca_dir), request_id],
                                                w.stack.env)
    # The device keeps asking the CA by itself; a refresh shows what it has.
    deadline = time.monotonic() + 20
    while tp["identity_status"] == "pending" and time.monotonic() < deadline:
        time.sleep(1)
        refresh = client.trustpoint_action(device["id"], "vpn-approval", "refresh")["job"]
        assert wait_for_jobs(client, [refresh["id"]])[0]["state"] == "succeeded"
        tp = client.trustpoint(device["id"], "vpn-approval")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "available")
    check_enrolled(w, [device], "vpn-approval", tmp_path)
