"""The secret-harvesting device, reproduced and failing: a network admin registers a device whose
management URL points at a host they control (a real HTTP server in a thread on loopback that
records every byte it receives), adds a trustpoint with an EST object an admin made at Global, and
the worker runs the job. Nothing goes to that host unless an admin trusted the endpoint, and what
goes is sealed to the device's credential: the host never reads the secret, and its answer, which
cannot prove the credential, fails the job. The legitimate simulated device, imported by an admin
with its credential, still gets its secrets, in one request.

The controller's API (real HTTP through FastAPI's TestClient, SQLite), the worker's runner with its
real device client, and the device simulator on loopback."""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from sqlmodel import Session
from structlog.testing import capture_logs

from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from services.worker.ca_gate import MemoryCaGate
from services.worker.context import WorkerContext
from services.worker.retry_policy import RetryPolicy
from services.worker.runner import run_job
from shared.device_auth import proof
from shared.device_client import HttpDeviceClient
from shared.logging import configure_logging
from shared.models import Device, Job, Trustpoint
from shared.secrets import SecretBox
from tests.support.api import GLOBAL, SECRET_KEY, Api, make_settings, problem, published

EST_PASSWORD = "est-Password-harvest-me-7Q"
CREDENTIAL = "the-real-device-credential-0001-0123456789"
EST_URL = "https://127.0.0.1:1/.well-known/est/"  # never reached: the gate stops the job first


class Recorder:
    """A host an attacker controls, posing as a device: it keeps the raw bytes and the JSON body of
    every request and answers what a device would, with ``proof`` (None: none) as its proof."""

    def __init__(self) -> None:
        self.raw = bytearray()
        self.paths: list[str] = []
        self.bodies: list[dict] = []
        self.proof: str | None = None
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                super().setup()
                self.rfile = _Tee(self.rfile, recorder)

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                received = self.rfile.read(length)
                with recorder._lock:
                    recorder.paths.append(f"{self.command} {self.path}")
                    recorder.bodies.append(json.loads(received) if received else {})
                body = {"name": "corp-est", "enrollment_type": "est", "ca_status": "available",
                        "identity_status": "available", "proof": recorder.proof}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, serial: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/api/devices/{serial}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Tee:
    """The request stream, every byte read also kept by the recorder."""

    def __init__(self, stream, recorder: Recorder) -> None:
        self.stream, self.recorder = stream, recorder

    def _keep(self, data: bytes) -> bytes:
        with self.recorder._lock:
            self.recorder.raw += data
        return data

    def readline(self, *args) -> bytes:
        return self._keep(self.stream.readline(*args))

    def read(self, *args) -> bytes:
        return self._keep(self.stream.read(*args))

    def __getattr__(self, name):
        return getattr(self.stream, name)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    host = Recorder()
    yield host
    host.stop()


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=4, seed=11)) as running:
        yield running


@pytest.fixture
def worker(api) -> Iterator[WorkerContext]:
    settings = make_settings(api.engine)
    ctx = WorkerContext(settings=settings, engine=api.engine, devices=HttpDeviceClient(timeout_seconds=5.0),
                        retry=RetryPolicy.from_settings(settings), secrets=SecretBox(SECRET_KEY),
                        rng=random.Random(1), ca_gate=MemoryCaGate())
    yield ctx
    ctx.close()


def token(api: Api, role: str, domain: str) -> dict[str, str]:
    made = api.ok("POST", "/tokens", {"name": f"{role} of {domain}", "role": role, "domain_id": domain}, status=201)
    return {"Authorization": f"Bearer {made['token']}"}


def call(api: Api, auth: dict[str, str], method: str, path: str, body: dict | None = None):
    return api.client.request(method, "/api/v1" + path, json=body, headers=auth)


def run(worker: WorkerContext, api: Api, job_id: str) -> Job:
    run_job(worker, job_id)
    with Session(api.engine) as session:
        return session.get(Job, uuid.UUID(job_id))


def global_est_object(api: Api) -> dict:
    """An EST object an admin made at Global, with its password: usable in every domain below."""
    return api.enrollment_object("corp-est", enrollment_type="est", enrollment_url=EST_URL, username="fw",
                                 password=EST_PASSWORD, key_type="rsa", key_size=2048)


@pytest.fixture
def attack(api, recorder):
    """Domain A, a network admin of A, and the device they registered at the host they control."""
    a = api.domain("A")
    net = token(api, "network_admin", a)
    registered = call(api, net, "POST", f"/domains/{a}/devices",
                      {"name": "fw-evil", "serial": "EVIL-1", "management_url": recorder.url("EVIL-1")})
    assert registered.status_code == 201, registered.text
    return a, net, registered.json()


def test_a_network_admins_device_at_a_host_they_control_never_gets_the_inherited_password(
        api, worker, recorder, attack):
    a, net, device = attack
    assert device["endpoint_trust"] == {"trusted": False, "basis": None, "approved_by": None, "approved_at": None,
                                        "has_credential": False}
    est = global_est_object(api)
    added = call(api, net, "POST", f"/domains/{a}/devices/{device['id']}/trustpoints",
                 {"enrollment_object_id": est["id"]})
    assert added.status_code == 202, added.text

    job = run(worker, api, added.json()["job"]["id"])

    assert (job.state, job.error_code) == ("failed", "device_endpoint_untrusted")
    assert "EVIL-1" in job.error_message and "approve" in job.error_message
    assert recorder.raw == b"" and recorder.paths == []  # nothing at all went to the host
    with Session(api.engine) as session:
        trustpoint = session.get(Trustpoint, uuid.UUID(added.json()["trustpoint"]["id"]))
        assert (trustpoint.identity_status, trustpoint.error_code) == ("failed", "device_endpoint_untrusted")
    # The network admin may neither approve the device nor allow its endpoint.
    problem(call(api, net, "POST", f"/domains/{a}/devices/{device['id']}/trust", {"credential": CREDENTIAL}),
            403, "forbidden")
    problem(call(api, net, "POST", "/management-endpoints", {"scheme": "http", "host": "127.0.0.1"}), 403, "forbidden")
    problem(call(api, net, "POST", f"/domains/{a}/devices", {
        "name": "fw-evil-2", "serial": "EVIL-2", "management_url": recorder.url("EVIL-2"),
        "endpoint_credential": CREDENTIAL}), 403, "forbidden")


def test_an_approved_or_allowed_endpoint_without_the_credential_never_reads_the_password(
        api, worker, recorder, attack):
    a, net, device = attack
    est = global_est_object(api)
    # An admin approves the device with the credential the real device holds; the host does not have it.
    configure_logging()  # INFO: another test of this process may have left it at WARNING
    with capture_logs() as logs:
        approved = api.post(f"/domains/{a}/devices/{device['id']}/trust", {"credential": CREDENTIAL})
        added = call(api, net, "POST", f"/domains/{a}/devices/{device['id']}/trustpoints",
                     {"enrollment_object_id": est["id"]})
        job = run(worker, api, added.json()["job"]["id"])
    trust = approved.json()["endpoint_trust"]
    assert (trust["trusted"], trust["basis"], trust["approved_by"], trust["has_credential"]) == (
        True, "approved", "test admin (admin)", True)
    seen = approved.text + added.text + str(logs) + json.dumps([m.asdict() for m in published(api.broker)])
    seen += json.dumps(job.steps) + job.error_message
    assert any(e.get("code") == "device_endpoint_unauthenticated" for e in logs)  # the logs were read
    assert CREDENTIAL not in seen and EST_PASSWORD not in seen

    # The host got the enroll request, one, and in it the password sealed: nothing it can read.
    assert (job.state, job.error_code) == ("failed", "device_endpoint_unauthenticated")
    assert "did not prove it holds its endpoint credential: its answer carries no proof" in job.error_message
    assert "nothing readable was sent" in job.error_message
    assert recorder.paths == ["POST /api/devices/EVIL-1/trustpoints/corp-est/enroll"]
    assert EST_PASSWORD.encode() not in recorder.raw and CREDENTIAL.encode() not in recorder.raw
    configuration = recorder.bodies[0]["configuration"]
    assert "password" not in configuration["options"] and set(configuration["sealed"]) == {"nonce", "ciphertext"}
    assert "endpoint_authenticated" not in {s["step"] for s in job.steps}
    with Session(api.engine) as session:  # what the host answered is not recorded
        trustpoint = session.get(Trustpoint, uuid.UUID(added.json()["trustpoint"]["id"]))
        assert (trustpoint.identity_status, trustpoint.error_code) == ("failed", "device_endpoint_unauthenticated")

    # Withdrawn, the approval no longer counts; the allow-list can trust the endpoint instead, and the
    # endpoint must still prove the credential: a proof the real device gave for another nonce, replayed, does not.
    withdrawn = api.ok("DELETE", f"/domains/{a}/devices/{device['id']}/trust")["endpoint_trust"]
    assert (withdrawn["trusted"], withdrawn["has_credential"]) == (False, True)
    port = int(recorder.url("x").split(":")[2].split("/")[0])
    entry = api.ok("POST", "/management-endpoints", {"scheme": "http", "host": "127.0.0.0/8", "port": port,
                                                      "description": "lab"}, status=201)
    assert api.ok("GET", f"/domains/{a}/devices/{device['id']}")["endpoint_trust"]["basis"] == "allow_list"
    recorder.proof = proof(CREDENTIAL, os.urandom(32), "EVIL-1")
    again = call(api, net, "POST", f"/domains/{a}/devices/{device['id']}/trustpoints/corp-est/re-enroll")
    job = run(worker, api, again.json()["job"]["id"])
    assert (job.state, job.error_code) == ("failed", "device_endpoint_unauthenticated")
    assert "the proof in its answer does not match the credential" in job.error_message
    assert EST_PASSWORD.encode() not in recorder.raw
    assert recorder.bodies[1]["configuration"]["sealed"]["nonce"] != configuration["sealed"]["nonce"]  # fresh

    # The allow-list is read when the secret is about to go: an entry removed stops it at once.
    api.ok("DELETE", f"/management-endpoints/{entry['id']}", status=204)
    again = call(api, net, "POST", f"/domains/{a}/devices/{device['id']}/trustpoints/corp-est/re-enroll")
    job = run(worker, api, again.json()["job"]["id"])
    assert (job.state, job.error_code) == ("failed", "device_endpoint_untrusted")
    assert recorder.paths == ["POST /api/devices/EVIL-1/trustpoints/corp-est/enroll"] * 2


def test_a_trusted_device_without_a_credential_gets_no_secret(api, worker, recorder, attack):
    a, net, device = attack
    api.ok("POST", "/management-endpoints", {"scheme": "http", "host": "127.0.0.1"}, status=201)
    est = global_est_object(api)
    added = call(api, net, "POST", f"/domains/{a}/devices/{device['id']}/trustpoints",
                 {"enrollment_object_id": est["id"]})
    job = run(worker, api, added.json()["job"]["id"])
    assert (job.state, job.error_code) == ("failed", "device_endpoint_unauthenticated")
    assert "certfleet holds no credential for it" in job.error_message
    assert recorder.raw == b""


def self_signed_pkcs12(passphrase: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fw.example.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return pkcs12.serialize_key_and_certificates(b"vpn", key, cert, None,
                                                 serialization.BestAvailableEncryption(passphrase.encode()))


def test_the_simulated_device_an_admin_imported_with_its_credential_gets_its_pkcs12_file(api, worker, sim):
    passphrase = "p12-Passphrase-of-the-fleet"
    configure_logging()  # INFO: another test of this process may have left it at WARNING
    with capture_logs() as logs:
        imported = api.ok("POST", f"/domains/{GLOBAL}/devices/import", {"inventory_url": sim.url})
        assert (imported["imported"], imported["approved"], imported["credentials"]) == (4, 4, 4)
        devices = api.ok("GET", f"/domains/{GLOBAL}/devices")["items"]
        obj = api.ok("POST", f"/domains/{GLOBAL}/enrollment-objects/pkcs12", {
            "filename": "vpn.p12", "passphrase": passphrase,
            "pkcs12_base64": base64.b64encode(self_signed_pkcs12(passphrase)).decode()}, status=201)
        added = api.add(devices[0]["id"], obj["id"])
        job = run(worker, api, added["job"]["id"])

    assert (job.state, job.error_code) == ("succeeded", None), job.error_message
    assert [s["step"] for s in job.steps][2:4] == ["endpoint_authenticated", "configured"]
    authenticated = next(s for s in job.steps if s["step"] == "endpoint_authenticated")
    assert authenticated["detail"] == (f"device {devices[0]['serial']} proved it holds its endpoint credential "
                                       "(endpoint approved by an admin)")
    address = SimpleNamespace(serial=devices[0]["serial"], management_url=devices[0]["management_url"])
    on_device = worker.devices.get_trustpoint(address, "vpn")
    assert on_device.identity_status == "available"
    # The credentials the inventory carried are kept sealed and never shown, logged or queued.
    credentials = [sim.sim.credential(d["serial"]) for d in devices]
    listed = api.get(f"/domains/{GLOBAL}/devices").text
    assert all(d["endpoint_trust"]["has_credential"] for d in devices)
    queued = json.dumps([m.asdict() for m in published(api.broker)])
    with Session(api.engine) as session:
        stored = session.get(Device, uuid.UUID(devices[0]["id"]))
        assert SecretBox(SECRET_KEY).open(stored.endpoint_credential_blob).decode() == credentials[0]
    assert any(e.get("event") == "inventory imported" and e.get("credentials") == 4 for e in logs)
    for secret in (*credentials, passphrase):
        assert secret not in listed and secret not in queued and secret not in str(logs)
        assert secret not in json.dumps(job.steps)


def test_a_device_that_cannot_open_its_sealed_secrets_applies_nothing_and_the_job_says_check_the_credential(
        api, worker, sim):
    serial = "FTD-000004"
    url = f"{sim.url}/api/devices/{serial}"
    device = api.device(serial, management_url=url, endpoint_credential="not-the-credential-the-device-holds")
    added = api.add(device["id"], global_est_object(api)["id"])
    job = run(worker, api, added["job"]["id"])
    assert (job.state, job.error_code) == ("failed", "device_endpoint_unauthenticated")
    assert "it could not open the sealed secrets with the credential it holds" in job.error_message
    assert "nothing readable was sent" in job.error_message and "credential" in job.error_message
    assert worker.devices.get_trustpoint(SimpleNamespace(serial=serial, management_url=url), "corp-est") is None


def test_a_network_admins_import_stores_no_credential_and_trusts_only_what_the_allow_list_matches(api, sim):
    net = {"Authorization": f"Bearer {api.tokens['network_admin']}"}
    host = sim.url.split("//")[1].split(":")[0]
    api.ok("POST", "/management-endpoints", {"scheme": "http", "host": host, "port": sim.port}, status=201)
    imported = call(api, net, "POST", f"/domains/{GLOBAL}/devices/import", {"inventory_url": sim.url}).json()
    assert (imported["imported"], imported["approved"], imported["credentials"]) == (4, 0, 0)
    device = api.ok("GET", f"/domains/{GLOBAL}/devices")["items"][0]
    assert device["endpoint_trust"] == {"trusted": True, "basis": "allow_list", "approved_by": None,
                                        "approved_at": None, "has_credential": False}
    # The admin gives the credential; the approval records who and when.
    approved = api.ok("POST", f"/domains/{GLOBAL}/devices/{device['id']}/trust",
                      {"credential": sim.sim.credential(device["serial"])})["endpoint_trust"]
    assert approved["basis"] == "approved" and approved["has_credential"] is True
    assert datetime.fromisoformat(approved["approved_at"]) > datetime.now(UTC) - timedelta(minutes=1)


def test_an_admin_cannot_give_a_device_a_credential_short_enough_to_guess(api):
    """Secrets travel sealed to the credential, so an endpoint that is not the device could try guesses
    at it offline: a short one is refused at registration and at approval, and not stored."""
    admin = token(api, "admin", str(GLOBAL))
    short = "x" * 31
    problem(call(api, admin, "POST", f"/domains/{GLOBAL}/devices", {
        "name": "fw-short-1", "serial": "SHORT-1", "management_url": "http://198.51.100.9/api/devices/SHORT-1",
        "endpoint_credential": short}), 422, "validation_error")
    device = call(api, admin, "POST", f"/domains/{GLOBAL}/devices", {
        "name": "fw-short-2", "serial": "SHORT-2", "management_url": "http://198.51.100.9/api/devices/SHORT-2"}).json()
    problem(call(api, admin, "POST", f"/domains/{GLOBAL}/devices/{device['id']}/trust",
                 {"credential": short}), 422, "validation_error")
    with Session(api.engine) as session:
        assert session.get(Device, uuid.UUID(device["id"])).endpoint_credential_blob is None
    assert call(api, admin, "POST", f"/domains/{GLOBAL}/devices/{device['id']}/trust",
                {"credential": "x" * 32}).status_code == 200
