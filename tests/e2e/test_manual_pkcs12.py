"""Manual and PKCS12 enrollment, export and weak-crypto end to end, as an operator does them:
through the controller's API over real HTTP, the worker (an in-process Dramatiq worker) and the
device simulator on loopback. The operator's CA and PKCS#12 files are the real ``openssl``.

Most tests share one embedded stack on SQLite and the in-process broker; the last one runs a
manual enrollment, a PKCS12 retry and an export on PostgreSQL and Redis (db 9).
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from sqlalchemy import update
from sqlmodel import Session, select
from structlog.testing import capture_logs

from services.cli.api_client import ApiError, CertfleetClient
from services.stack.embedded import EmbeddedStack
from shared.models import AuditEntry, Device, EnrollmentObject, Job
from shared.pkcs12 import MAX_PKCS12_BYTES
from shared.settings import Settings
from tests.support.openssl_pki import OpensslCa, openssl, pkcs12_algorithms, read_pkcs12
from tests.support.pg import fresh_database, postgres_or_skip
from tests.support.procs import free_port

GLOBAL = "e276abec-e0f2-11e3-8169-6d9ed49b625f"
REDIS_URL = "redis://127.0.0.1:6379/9"
PEM = "application/x-pem-file"


@dataclass
class World:
    stack: EmbeddedStack
    client: CertfleetClient
    devices: list[dict]
    ca: OpensslCa
    rsa_ca: OpensslCa
    other_ca: OpensslCa
    dir: Path

    def path(self, device: dict, name: str = "") -> str:
        base = f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints"
        return f"{base}/{name}" if name else base

    def manual_object(self, name: str, **fields) -> dict:
        body = {"name": name, "enrollment_type": "manual", "key_type": "ecdsa", "key_size": 256,
                "organization": "Example Corp", "include_fqdn": True, **fields}
        return self.client.create_enrollment_object(**body)

    def enroll(self, device: dict, obj: dict) -> dict:
        job = self.client.add_trustpoint(device["id"], obj["id"])["job"]
        return self.client.wait_for_job(job["id"])

    def trustpoint(self, device: dict, name: str) -> dict:
        return self.client.trustpoint(device["id"], name)

    def import_certificate(self, device: dict, name: str, body: bytes,
                           media_type: str = PEM) -> httpx.Response:
        return self.client.http.post(self.path(device, name) + "/identity-certificate", content=body,
                                     headers={"Content-Type": media_type})

    def upload(self, filename: str, content: bytes, passphrase: str | None, **extra) -> httpx.Response:
        data = {**({"passphrase": passphrase} if passphrase is not None else {}), **extra}
        return self.client.http.post(f"/domains/{GLOBAL}/enrollment-objects/pkcs12", data=data,
                                     files={"file": (filename, content, "application/x-pkcs12")})

    def export(self, device: dict, name: str, body: dict) -> httpx.Response:
        return self.client.http.post(self.path(device, name) + "/export", json=body)

    def objects(self) -> list[dict]:
        return list(self.client._pages(f"/domains/{GLOBAL}/enrollment-objects"))


def problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code and body["detail"], body
    return body


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def start_world(settings: Settings, directory: Path, devices: int = 8) -> World:
    stack = EmbeddedStack(settings, devices=devices, worker_threads=4, state_dir=directory / "state").start()
    client = CertfleetClient(stack.api_url, stack.admin_token)
    client.import_devices(stack.sim.url)
    return World(stack=stack, client=client, devices=sorted(client.devices(), key=lambda d: d["serial"]),
                 ca=OpensslCa(directory / "ca"), rsa_ca=OpensslCa(directory / "rsa-ca", "Legacy RSA CA",
                                                                  key_kind="rsa"),
                 other_ca=OpensslCa(directory / "other-ca", "Someone Else's CA"), dir=directory)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("manual-pkcs12")
    w = start_world(Settings(secret_key="manual-pkcs12-test-key", log_level="WARNING"), directory)
    yield w
    w.client.close()
    w.stack.stop()


# --- manual enrollment ----------------------------------------------------------------------------

def test_manual_enrollment_with_a_ca_certificate(world):
    w, device = world, world.devices[0]
    job = w.enroll(device, w.manual_object("man-ca", ca_certificate_pem=w.ca.pem))
    assert job["state"] == "succeeded", job["error_message"]
    tp = w.trustpoint(device, "man-ca")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "pending")
    assert [c["fingerprint_sha256"] for c in tp["ca_certificates"]] == [fingerprint(w.ca.certificate)]
    assert tp["identity_certificate"] is None

    # The operator views and copies the CSR: the device's key, its subject and names.
    answer = w.client.http.get(w.path(device, "man-ca") + "/csr")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(PEM)
    assert answer.text == tp["csr_pem"]
    csr = x509.load_pem_x509_csr(answer.content)
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device["fqdn"]
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [device["fqdn"]]
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)

    # A certificate for another key, or from another CA, is refused at once with its reason.
    _, stranger = w.ca.issue("stranger")
    problem(w.import_certificate(device, "man-ca", stranger.read_bytes()), 422, "key_mismatch")
    elsewhere = w.other_ca.sign_csr(answer.text, name="elsewhere")
    body = problem(w.import_certificate(device, "man-ca", elsewhere.read_bytes()), 422, "not_issued_by_ca")
    assert "Someone Else" in body["detail"]
    assert w.trustpoint(device, "man-ca")["identity_status"] == "pending"

    # openssl x509 -req plays the operator's CA; the certificate comes back as DER.
    signed = w.ca.sign_csr(answer.text, name="man-ca")
    der = load(signed.read_text()).public_bytes(serialization.Encoding.DER)
    accepted = w.import_certificate(device, "man-ca", der, "application/pkix-cert")
    assert accepted.status_code == 202, accepted.text
    job = w.client.wait_for_job(accepted.json()["job"]["id"])
    assert (job["kind"], job["state"]) == ("install_identity", "succeeded"), job["error_message"]
    tp = w.trustpoint(device, "man-ca")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "available")
    assert tp["identity_certificate"]["fingerprint_sha256"] == fingerprint(load(signed.read_text()))
    assert tp["identity_certificate"]["issuer"] == tp["ca_certificates"][0]["subject"]
    assert tp["csr_pem"] is None
    openssl("verify", "-CAfile", str(w.ca.cert), str(signed), cwd=w.dir)
    # Imported once: nothing waits for a certificate any more.
    problem(w.import_certificate(device, "man-ca", signed.read_bytes()), 409, "not_pending")


def test_manual_ca_only_installs_the_ca_certificate_alone(world):
    w, device = world, world.devices[1]
    assert w.enroll(device, w.manual_object("man-ca-only", ca_certificate_pem=w.ca.pem, ca_only=True))[
        "state"] == "succeeded"
    tp = w.trustpoint(device, "man-ca-only")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "not_applicable")
    assert len(tp["ca_certificates"]) == 1 and tp["identity_certificate"] is None
    problem(w.client.http.get(w.path(device, "man-ca-only") + "/csr"), 404, "no_csr")
    problem(w.import_certificate(device, "man-ca-only", w.ca.cert.read_bytes()), 409, "not_pending")
    problem(w.export(device, "man-ca-only", {"format": "pem"}), 409, "no_identity_certificate")


def test_manual_csr_without_a_ca_certificate_then_the_identity_with_its_ca(world):
    w, device = world, world.devices[2]
    assert w.enroll(device, w.manual_object("man-no-ca"))["state"] == "succeeded"
    tp = w.trustpoint(device, "man-no-ca")
    assert (tp["ca_status"], tp["identity_status"]) == ("pending", "pending")
    signed = w.ca.sign_csr(w.client.trustpoint_csr(device["id"], "man-no-ca"), name="man-no-ca")
    refused = w.import_certificate(device, "man-no-ca", signed.read_bytes())
    body = problem(refused, 422, "ca_certificate_required")
    assert "CA certificate" in body["detail"]

    answer = w.client.http.post(w.path(device, "man-no-ca") + "/identity-certificate",
                                json={"certificate_pem": signed.read_text(), "ca_certificate_pem": w.ca.pem})
    assert answer.status_code == 202, answer.text
    assert w.client.wait_for_job(answer.json()["job"]["id"])["state"] == "succeeded"
    tp = w.trustpoint(device, "man-no-ca")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "available")
    assert [c["fingerprint_sha256"] for c in tp["ca_certificates"]] == [fingerprint(w.ca.certificate)]

    # Re-enrolling makes a new key pair and CSR; the CA certificate imported last time stays.
    first_csr = x509.load_pem_x509_csr(signed.with_suffix(".csr").read_bytes())
    job = w.client.trustpoint_action(device["id"], "man-no-ca", "re-enroll")["job"]
    assert w.client.wait_for_job(job["id"])["state"] == "succeeded"
    tp = w.trustpoint(device, "man-no-ca")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "pending")
    assert x509.load_pem_x509_csr(tp["csr_pem"].encode()).public_key() != first_csr.public_key()


def test_identity_imports_that_are_not_certificates_are_refused_clearly(world):
    w, device = world, world.devices[1]
    job = w.enroll(device, w.manual_object("man-bodies", ca_certificate_pem=w.ca.pem))
    assert job["state"] == "succeeded"
    problem(w.import_certificate(device, "man-bodies", b"hello"), 422, "invalid_certificate")
    problem(w.import_certificate(device, "man-bodies", os.urandom(500), "application/pkix-cert"), 422,
            "invalid_certificate")
    problem(w.import_certificate(device, "man-bodies", b"<html/>", "text/html"), 415,
            "unsupported_media_type")
    problem(w.import_certificate(device, "man-bodies", b"A" * (300 * 1024)), 413, "body_too_large")
    path = w.path(device, "man-bodies") + "/identity-certificate"
    problem(w.client.http.post(path, json={"pem": "x"}), 422, "validation_error")
    problem(w.import_certificate(w.devices[0], "no-such-trustpoint", w.ca.cert.read_bytes()), 404,
            "not_found")
    assert w.trustpoint(device, "man-bodies")["identity_status"] == "pending"


def test_weak_signature_is_refused_until_weak_crypto_is_enabled_with_confirmation(world):
    w, device = world, world.devices[3]
    job = w.enroll(device, w.manual_object("man-weak", ca_certificate_pem=w.rsa_ca.pem))
    assert job["state"] == "succeeded"
    csr = w.client.trustpoint_csr(device["id"], "man-weak")
    signed = w.rsa_ca.sign_csr(csr, name="man-weak", digest="sha1")
    body = problem(w.import_certificate(device, "man-weak", signed.read_bytes()), 422, "weak_crypto")
    assert "sha1WithRSAEncryption" in body["detail"] and "enable weak-crypto" in body["detail"]

    device_path = f"/domains/{GLOBAL}/devices/{device['id']}"
    body = problem(w.client.http.patch(device_path, json={"weak_crypto": True}), 409,
                   "weak_crypto_confirmation_required")
    assert "confirm" in body["detail"]
    assert w.client.device(device["id"])["weak_crypto"] is False
    assert w.client.update_device(device["id"], weak_crypto=True, confirm=True)["weak_crypto"] is True

    accepted = w.import_certificate(device, "man-weak", signed.read_bytes())
    assert accepted.status_code == 202, accepted.text
    assert w.client.wait_for_job(accepted.json()["job"]["id"])["state"] == "succeeded"
    tp = w.trustpoint(device, "man-weak")
    assert tp["identity_status"] == "available"
    assert tp["identity_certificate"]["signature_algorithm"] == "sha1WithRSAEncryption"


# --- PKCS12 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_pkcs12_files_from_openssl_install_key_certificate_and_chain(world, kind):
    w, device = world, world.devices[4]
    path = w.ca.pkcs12(f"gw-{kind}", "p12-pass", kind=kind)
    created = w.upload(path.name, path.read_bytes(), "p12-pass")
    assert created.status_code == 201, created.text
    obj = created.json()
    assert (obj["name"], obj["enrollment_type"]) == (f"gw-{kind}", "pkcs12")
    assert obj["pkcs12_filename"] == path.name
    assert obj["has_pkcs12_file"] and obj["has_secret"] and "p12-pass" not in created.text
    assert w.enroll(device, obj)["state"] == "succeeded"
    tp = w.trustpoint(device, f"gw-{kind}")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "available")
    _, in_file = read_pkcs12(path, "p12-pass")
    identity = next(c for c in in_file if c != w.ca.certificate)
    assert tp["identity_certificate"]["fingerprint_sha256"] == fingerprint(identity)
    assert [c["fingerprint_sha256"] for c in tp["ca_certificates"]] == [fingerprint(w.ca.certificate)]
    assert tp["identity_certificate"]["key_algorithm"] == ("RSA" if kind == "rsa" else "ECDSA")


def test_legacy_pkcs12_is_weak_until_weak_crypto_is_enabled_then_re_enroll_succeeds(world):
    w, device = world, world.devices[5]
    names = []
    for kind in ("rsa", "ec"):
        path = w.ca.pkcs12(f"legacy-{kind}", "old-pass", kind=kind, legacy=True)
        assert "3DES" in pkcs12_algorithms(path, "old-pass") or "RC2" in pkcs12_algorithms(path, "old-pass")
        obj = w.upload(path.name, path.read_bytes(), "old-pass").json()
        job = w.enroll(device, obj)
        assert (job["state"], job["error_code"]) == ("failed", "weak_crypto")
        assert "pbeWithSHAAnd40BitRC2-CBC" in job["error_message"]
        assert "enable weak-crypto on the device" in job["error_message"]
        tp = w.trustpoint(device, obj["name"])
        assert (tp["ca_status"], tp["identity_status"]) == ("failed", "failed")
        assert tp["error_code"] == "weak_crypto"
        names.append(obj["name"])

    w.client.update_device(device["id"], weak_crypto=True, confirm=True)
    for name in names:
        job = w.client.trustpoint_action(device["id"], name, "re-enroll")["job"]
        assert w.client.wait_for_job(job["id"])["state"] == "succeeded"
        tp = w.trustpoint(device, name)
        assert (tp["ca_status"], tp["identity_status"], tp["error_code"]) == ("available", "available", None)


def test_a_wrong_passphrase_is_corrected_and_retried_without_a_new_upload(world):
    w, device = world, world.devices[6]
    path = w.ca.pkcs12("vpn-retry", "Right-Passphrase-7", kind="rsa")
    with capture_logs() as logs:
        obj = w.upload(path.name, path.read_bytes(), "Wrong-Passphrase-3").json()
        job = w.enroll(device, obj)
        assert (job["state"], job["error_code"]) == ("failed", "pkcs12_bad_passphrase")
        assert "correct the passphrase on the enrollment object and re-enroll" in job["error_message"]
        tp = w.trustpoint(device, "vpn-retry")
        assert (tp["ca_status"], tp["identity_status"]) == ("failed", "failed")

        corrected = w.client.set_pkcs12_passphrase(obj["id"], "Right-Passphrase-7")
        assert corrected["has_pkcs12_file"] and corrected["pkcs12_filename"] == "vpn-retry.p12"
        retry = w.client.trustpoint_action(device["id"], "vpn-retry", "re-enroll")["job"]
        retried = w.client.wait_for_job(retry["id"])
        assert retried["state"] == "succeeded", retried["error_message"]
    tp = w.trustpoint(device, "vpn-retry")
    assert (tp["ca_status"], tp["identity_status"]) == ("available", "available")
    assert [o["name"] for o in w.objects()].count("vpn-retry") == 1

    # Neither passphrase went anywhere but to the device: not the API, jobs, queue or logs.
    assert logs, "the worker logs its jobs"
    seen = str(logs) + str(job) + str(retried) + str(tp) + str(corrected) + str(w.objects())
    with Session(w.stack.engine) as session:
        seen += str([j.steps for j in session.exec(select(Job)).all()])
        stored = session.get(EnrollmentObject, uuid.UUID(obj["id"]))
        assert stored is not None
    for secret in ("Wrong-Passphrase-3", "Right-Passphrase-7"):
        assert secret not in seen
        assert secret.encode() not in (stored.secret_blob or b"")  # encrypted at rest
    assert path.read_bytes() not in (stored.pkcs12_blob or b"")


def exact_size_pkcs12(size: int) -> bytes:
    """A valid PKCS#12 file of exactly ``size`` bytes: a filler CA certificate's extension grows
    it byte by byte (Ed25519 signatures have a fixed length, so nothing else moves)."""
    key, filler_key = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()

    def cert(subject_key, cn: str, filler: int = 0) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = datetime.now(UTC)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(subject_key.public_key()).serial_number(1).not_valid_before(now)
                   .not_valid_after(now + timedelta(days=1)))
        if filler:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x00" * filler),
                critical=False)
        return builder.sign(subject_key, None)

    leaf = cert(key, "exact.example.com")

    def build(filler: int) -> bytes:
        filler_cert = cert(filler_key, "Filler", filler)
        return pkcs12.serialize_key_and_certificates(b"exact", key, leaf, [filler_cert],
                                                     serialization.NoEncryption())

    guess = size - len(build(1000)) + 1000
    for filler in range(guess - 8, guess + 8):
        data = build(filler)
        if len(data) == size:
            return data
    raise AssertionError("no filler gives the exact size")


def test_upload_limits_garbage_and_names(world):
    w = world
    before = len(w.objects())
    exact = exact_size_pkcs12(MAX_PKCS12_BYTES)
    assert len(exact) == 24 * 1024
    created = w.upload("exactly-24k.p12", exact, "")
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "exactly-24k"

    body = problem(w.upload("too-big.p12", exact + b"\x00", "pw"), 413, "pkcs12_too_large")
    assert "24 KiB" in body["detail"]
    problem(w.upload("huge.p12", os.urandom(200 * 1024), "pw"), 413, "pkcs12_too_large")
    body = problem(w.upload("garbage.p12", os.urandom(3000), "pw"), 422, "invalid_pkcs12")
    assert "PKCS#12" in body["detail"]
    problem(w.upload("a cert.p12", w.ca.pkcs12("named", "pw").read_bytes(), "pw"), 422, "invalid_name")
    problem(w.upload("no-pass.p12", exact, None), 422, "passphrase_required")
    names = [o["name"] for o in w.objects()]
    assert len(names) == before + 1 and not {"too-big", "huge", "garbage", "no-pass"} & set(names)

    # The JSON form, with a name of its own for a file whose name cannot be one.
    path = w.ca.pkcs12("json-upload", "pw")
    answer = w.client.http.post(f"/domains/{GLOBAL}/enrollment-objects/pkcs12", json={
        "filename": "my certificate.p12", "name": "json-upload", "passphrase": "pw",
        "pkcs12_base64": base64.b64encode(path.read_bytes()).decode()})
    assert answer.status_code == 201 and answer.json()["name"] == "json-upload", answer.text
    upload = f"/domains/{GLOBAL}/enrollment-objects/pkcs12"
    problem(w.client.http.post(upload, json={"filename": "x.p12", "passphrase": "pw",
                                             "pkcs12_base64": "%%% not base64 %%%"}), 422, "invalid_pkcs12")
    raw = w.client.http.post(upload, content=path.read_bytes(),
                             headers={"Content-Type": "application/x-pkcs12"})
    problem(raw, 415, "unsupported_media_type")
    other = w.client.create_enrollment_object(name="not-p12", enrollment_type="self_signed", key_type="ecdsa",
                                              key_size=256)
    problem(w.client.http.put(f"/domains/{GLOBAL}/enrollment-objects/{other['id']}/passphrase",
                              json={"passphrase": "x"}), 422, "not_pkcs12")


# --- export ------------------------------------------------------------------------------------------

def test_exports_pkcs12_with_the_whole_chain_and_pem_and_audits_them(world):
    w, device = world, world.devices[7]
    path = w.ca.pkcs12("vpn-export", "import-pass", kind="rsa")
    obj = w.upload(path.name, path.read_bytes(), "import-pass").json()
    assert w.enroll(device, obj)["state"] == "succeeded"
    tp = w.trustpoint(device, "vpn-export")

    answer = w.export(device, "vpn-export", {"format": "pkcs12", "passphrase": "Export-Pass-9"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-pkcs12"
    assert answer.headers["content-disposition"] == 'attachment; filename="vpn-export.p12"'
    exported = w.dir / "vpn-export.p12"
    exported.write_bytes(answer.content)
    key_pem, certificates = read_pkcs12(exported, "Export-Pass-9")
    assert {fingerprint(c) for c in certificates} == {
        tp["identity_certificate"]["fingerprint_sha256"], fingerprint(w.ca.certificate)}
    # The key in the export is the key the PKCS#12 file brought.
    original_key, _ = read_pkcs12(path, "import-pass")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    assert (serialization.load_pem_private_key(key_pem.encode(), None).public_key().public_bytes(
        serialization.Encoding.DER, public) == serialization.load_pem_private_key(
        original_key.encode(), None).public_key().public_bytes(serialization.Encoding.DER, public))
    info = pkcs12_algorithms(exported, "Export-Pass-9")
    assert "AES-256-CBC" in info and "PBKDF2" in info

    pem = w.export(device, "vpn-export", {"format": "pem"})
    assert pem.status_code == 200 and pem.headers["content-type"].startswith(PEM)
    assert pem.text == tp["identity_certificate"]["pem"]
    assert len(x509.load_pem_x509_certificates(pem.content)) == 1

    problem(w.export(device, "vpn-export", {"format": "pkcs12"}), 422, "passphrase_required")
    problem(w.export(device, "vpn-export", {"format": "pkcs12", "passphrase": ""}), 422,
            "passphrase_required")
    problem(w.export(device, "vpn-export", {"format": "der"}), 422, "validation_error")

    # Every export asked is in the audit log, newest first, refusals too; the format when it was read.
    audit = w.client.audit(action="export_certificate", device_id=device["id"])
    assert [(a["targets"]["name"], a["details"].get("format"), a["outcome"], a["error_code"]) for a in audit] == [
        ("vpn-export", None, "failed", "validation_error"),
        ("vpn-export", "pkcs12", "failed", "passphrase_required"),
        ("vpn-export", "pkcs12", "failed", "passphrase_required"),
        ("vpn-export", "pem", "ok", None), ("vpn-export", "pkcs12", "ok", None)]
    assert all((a["token_name"], a["role"]) == ("embedded stack", "admin") for a in audit)
    assert all(a["details"]["device_name"] == device["name"] for a in audit if a["outcome"] == "ok")
    assert "Export-Pass-9" not in str(audit)
    with Session(w.stack.engine) as session:
        assert "Export-Pass-9" not in str([r.model_dump() for r in session.exec(select(AuditEntry)).all()])


def test_an_unreachable_device_fails_the_export_with_502_and_an_audit_row(world):
    w, device = world, world.devices[7]
    dead = f"http://127.0.0.1:{free_port()}/api/devices/{device['serial']}"
    with Session(w.stack.engine) as session:
        session.execute(update(Device).where(Device.id == uuid.UUID(device["id"]))
                        .values(management_url=dead))
        session.commit()
    try:
        body = problem(w.export(device, "vpn-export", {"format": "pkcs12", "passphrase": "x"}), 502,
                       "device_unreachable")
        assert device["serial"] in body["detail"]
    finally:
        with Session(w.stack.engine) as session:
            session.execute(update(Device).where(Device.id == uuid.UUID(device["id"]))
                            .values(management_url=device["management_url"]))
            session.commit()
    latest = w.client.audit(action="export_certificate", device_id=device["id"])[0]
    assert (latest["outcome"], latest["status"], latest["error_code"]) == ("failed", 502, "device_unreachable")
    assert latest["details"]["format"] == "pkcs12"


def test_read_only_tokens_may_read_the_audit_but_not_export(world):
    from services.controller.api.auth import create_token
    from shared.enums import Role

    with Session(world.stack.engine) as session:
        token = create_token(session, role=Role.READ_ONLY, name="auditor")
        session.commit()
    with CertfleetClient(world.stack.api_url, token) as reader:
        assert reader.audit(action="export_certificate")
        with pytest.raises(ApiError) as refused:
            reader.export_trustpoint(world.devices[7]["id"], "vpn-export", "pem")
        assert refused.value.status == 403


# --- the same flows on PostgreSQL and Redis ---------------------------------------------------------

@pytest.mark.redis
@pytest.mark.postgres
def test_manual_pkcs12_and_export_on_postgres_and_redis(tmp_path):
    postgres_or_skip()
    try:
        redis.Redis.from_url(REDIS_URL).flushdb()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and Redis is unreachable: {exc}")
        pytest.skip(f"Redis is unreachable: {exc}")
    with fresh_database() as url:
        w = start_world(Settings(database_url=url, broker_url=REDIS_URL, secret_key="pg-redis-key",
                                 log_level="WARNING"), tmp_path, devices=2)
        try:
            device = w.devices[0]
            assert w.enroll(device, w.manual_object("pg-manual"))["state"] == "succeeded"
            signed = w.ca.sign_csr(w.client.trustpoint_csr(device["id"], "pg-manual"), name="pg-manual")
            answer = w.client.import_identity_certificate(device["id"], "pg-manual", signed.read_bytes(),
                                                          ca_certificate=w.ca.cert.read_bytes())
            assert w.client.wait_for_job(answer["job"]["id"])["state"] == "succeeded"
            assert w.trustpoint(device, "pg-manual")["identity_status"] == "available"

            path = w.ca.pkcs12("pg-p12", "good")
            obj = w.client.upload_pkcs12(path.name, path.read_bytes(), "bad")
            assert w.enroll(device, obj)["error_code"] == "pkcs12_bad_passphrase"
            w.client.set_pkcs12_passphrase(obj["id"], "good")
            retry = w.client.trustpoint_action(device["id"], "pg-p12", "re-enroll")["job"]
            assert w.client.wait_for_job(retry["id"])["state"] == "succeeded"

            exported = tmp_path / "pg.p12"
            content = w.client.export_trustpoint(device["id"], "pg-manual", "pkcs12", passphrase="pgx")
            exported.write_bytes(content)
            _, certificates = read_pkcs12(exported, "pgx")
            assert {fingerprint(c) for c in certificates} == {fingerprint(load(signed.read_text())),
                                                              fingerprint(w.ca.certificate)}
            assert [a["details"]["format"] for a in w.client.audit(action="export_certificate")] == ["pkcs12"]
        finally:
            w.client.close()
            w.stack.stop()
            redis.Redis.from_url(REDIS_URL).flushdb()
