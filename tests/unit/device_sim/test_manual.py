"""The device side of manual enrollment and export, through the device-management API as a
worker (or the controller's export) speaks it: the simulator over HTTP on loopback."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from shared.device_api import ExportedFile, TrustpointState


class Ca:
    def __init__(self, key=None) -> None:
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Device Test CA")])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(1).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, csr_pem: str, public_key=None) -> str:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder().subject_name(csr.subject).issuer_name(self.name)
            .public_key(public_key or csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=10))
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=6, seed=9)) as running:
        yield running


@pytest.fixture
def http(sim) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        yield client


def configure_and_enroll(http: httpx.Client, device: str, name: str, enrollment_type: str = "manual",
                         mode: str = "enroll", **options) -> TrustpointState:
    body = {"name": name, "enrollment_type": enrollment_type, "key_type": "ecdsa", "key_size": 256,
            "subject": {"common_name": "fw.example.com"}, "options": options}
    assert http.put(f"{device}/trustpoints/{name}", json=body).status_code == 200
    answer = http.post(f"{device}/trustpoints/{name}/enroll", json={"mode": mode})
    assert answer.status_code == 200, answer.text
    assert "PRIVATE KEY" not in answer.text
    return TrustpointState.model_validate_json(answer.content)


def import_identity(http: httpx.Client, device: str, name: str, certificate_pem: str,
                    **extra) -> httpx.Response:
    return http.post(f"{device}/trustpoints/{name}/identity-certificate",
                     json={"certificate_pem": certificate_pem, **extra})


def test_a_manual_trustpoint_waits_with_its_csr_and_installs_the_signed_certificate(http):
    device, ca = "/api/devices/FTD-000001", Ca()
    pending = configure_and_enroll(http, device, "manual", ca_certificate_pem=ca.pem)
    assert (pending.ca_status, pending.identity_status) == ("available", "pending")
    assert pending.csr_pem and [c.role for c in pending.certificates] == ["ca"]
    # The same enrollment delivered twice keeps its CSR: the operator may have sent it to the CA already.
    assert configure_and_enroll(http, device, "manual", ca_certificate_pem=ca.pem).csr_pem == pending.csr_pem

    wrong = ca.sign(pending.csr_pem, public_key=ec.generate_private_key(ec.SECP256R1()).public_key())
    refused = import_identity(http, device, "manual", wrong)
    assert (refused.status_code, refused.json()["code"]) == (422, "key_mismatch")

    certificate = ca.sign(pending.csr_pem)
    answer = import_identity(http, device, "manual", certificate)
    assert answer.status_code == 200, answer.text
    installed = TrustpointState.model_validate_json(answer.content)
    assert (installed.ca_status, installed.identity_status) == ("available", "available")
    assert installed.csr_pem is None
    assert {(c.role, c.chain_position) for c in installed.certificates} == {("identity", 0), ("ca", 0)}
    # A redelivered install job finds it installed: the same answer, not an error.
    again = import_identity(http, device, "manual", certificate)
    assert again.status_code == 200 and TrustpointState.model_validate_json(again.content) == installed


def test_only_a_pending_manual_trustpoint_takes_a_certificate(http):
    device, ca = "/api/devices/FTD-000002", Ca()
    configure_and_enroll(http, device, "self", enrollment_type="self_signed")
    refused = import_identity(http, device, "self", ca.pem)
    assert (refused.status_code, refused.json()["code"]) == (409, "not_pending")
    missing = import_identity(http, device, "nowhere", ca.pem)
    assert (missing.status_code, missing.json()["code"]) == (404, "trustpoint_not_found")


def test_ca_only_and_a_weak_ca_certificate(http):
    device = "/api/devices/FTD-000003"
    ca_only = configure_and_enroll(http, device, "ca-only", ca_certificate_pem=Ca().pem, ca_only=True)
    assert (ca_only.ca_status, ca_only.identity_status) == ("available", "not_applicable")
    assert ca_only.csr_pem is None
    weak_ca = Ca(rsa.generate_private_key(65537, 1024))
    refused = configure_and_enroll(http, device, "weak-ca", ca_certificate_pem=weak_ca.pem, weak_crypto=False)
    assert (refused.ca_status, refused.error_code) == ("failed", "weak_crypto")
    assert "RSA-1024" in (refused.error_message or "")
    allowed = configure_and_enroll(http, device, "weak-ca", mode="re_enroll", ca_certificate_pem=weak_ca.pem,
                                   weak_crypto=True)
    assert (allowed.ca_status, allowed.identity_status) == ("available", "pending")


def test_export_needs_an_identity_and_a_passphrase_and_holds_the_key(http):
    device = "/api/devices/FTD-000004"
    configure_and_enroll(http, device, "pending", ca_certificate_pem=Ca().pem)
    early = http.post(f"{device}/trustpoints/pending/export", json={"format": "pem"})
    assert (early.status_code, early.json()["code"]) == (409, "no_identity_certificate")

    state = configure_and_enroll(http, device, "self", enrollment_type="self_signed")
    path = f"{device}/trustpoints/self/export"
    refused = http.post(path, json={"format": "pkcs12"})
    assert (refused.status_code, refused.json()["code"]) == (422, "passphrase_required")
    pem = ExportedFile.model_validate_json(http.post(path, json={"format": "pem"}).content)
    identity = next(c.pem for c in state.certificates if c.role == "identity")
    assert base64.b64decode(pem.content_base64).decode() == identity

    answer = http.post(path, json={"format": "pkcs12", "passphrase": "device-export"})
    assert answer.status_code == 200 and "device-export" not in answer.text
    exported = ExportedFile.model_validate_json(answer.content)
    loaded = pkcs12.load_pkcs12(base64.b64decode(exported.content_base64), b"device-export")
    assert loaded.key is not None and loaded.cert is not None
    assert loaded.cert.certificate == x509.load_pem_x509_certificate(identity.encode())
    assert loaded.additional_certs == []  # a self-signed trustpoint's CA is its identity: once is enough
