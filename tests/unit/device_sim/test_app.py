"""The device simulator, over real HTTP on loopback: the device-management API as a worker
sees it (shared/device_api.py), faults, the default keyring, fleet start-up and the CLI."""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pydantic import TypeAdapter

from services.device_sim.cli import CREDENTIAL_KEY_ENV, add_arguments, config_from_args
from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from shared.clock import utcnow
from shared.device_api import DeviceInfo, Inventory, KeyringState, TrustpointState
from shared.device_auth import proof_matches
from shared.enrollment import EnrollmentParameters
from shared.errors import ConfigurationError
from shared.sealed_secrets import SealedConfiguration, seal_configuration
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]
DEVICE = "/api/devices/FTD-000007"
TRUSTPOINT_LIST = TypeAdapter(list[TrustpointState])


def check_no_private_key(response: httpx.Response) -> None:
    response.read()
    assert b"PRIVATE KEY" not in response.content, f"{response.request.url} returned a private key"


def client_for(sim: RunningSim, **kwargs) -> httpx.Client:
    hooks = {"response": [check_no_private_key]}
    return httpx.Client(base_url=sim.url, timeout=10, event_hooks=hooks, **kwargs)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=120, seed=3)) as running:
        yield running


@pytest.fixture
def client(sim: RunningSim) -> Iterator[httpx.Client]:
    with client_for(sim) as c:
        yield c


def configuration(name: str = "vpn-id", **overrides) -> dict:
    body = {
        "name": name,
        "enrollment_type": "self_signed",
        "key_type": "ecdsa",
        "key_size": 256,
        "subject": {"common_name": "vpn.example.com", "organization": "Example Corp", "country": "US"},
        "include_fqdn": True,
        "validity_days": 30,
        "options": {},
    }
    body.update(overrides)
    return body


def configure_and_enroll(
    client: httpx.Client, device: str, body: dict, mode: str = "enroll"
) -> TrustpointState:
    configured = client.put(f"{device}/trustpoints/{body['name']}", json=body)
    assert configured.status_code == 200, configured.text
    enrolled = client.post(f"{device}/trustpoints/{body['name']}/enroll", json={"mode": mode})
    assert enrolled.status_code == 200, enrolled.text
    return TrustpointState.model_validate_json(enrolled.content)


def identity_certificate(state: TrustpointState) -> x509.Certificate:
    (pem,) = [c.pem for c in state.certificates if c.role == "identity" and c.chain_position == 0]
    return x509.load_pem_x509_certificate(pem.encode())


def public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_self_signature(cert: x509.Certificate) -> None:
    key, signed = cert.public_key(), cert.tbs_certificate_bytes
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(cert.signature, signed, padding.PKCS1v15(), cert.signature_hash_algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(cert.signature, signed, ec.ECDSA(cert.signature_hash_algorithm))
    else:
        assert isinstance(key, ed25519.Ed25519PublicKey)
        key.verify(cert.signature, signed)


# --- inventory -------------------------------------------------------------------------------

def test_inventory_pages_through_the_whole_fleet(sim: RunningSim, client: httpx.Client) -> None:
    serials: list[str] = []
    offset = 0
    while True:
        answer = client.get("/api/inventory", params={"offset": offset, "limit": 50})
        page = Inventory.model_validate_json(answer.content)
        assert page.total == 120
        if not page.items:
            break
        serials += [d.serial for d in page.items]
        offset += len(page.items)
    assert serials == [f"FTD-{i:06d}" for i in range(1, 121)]

    first = Inventory.model_validate_json(client.get("/api/inventory", params={"limit": 1}).content).items[0]
    assert first.management_url == f"{sim.url}/api/devices/FTD-000001"
    assert first.fqdn == "ftd-000001.fleet.example" and first.model.startswith("FTD")
    own = DeviceInfo.model_validate_json(client.get("/api/devices/FTD-000001").content)
    assert own == first.model_copy(update={"endpoint_credential": None})  # the device itself never shows it


def test_each_device_has_its_own_credential_and_the_inventory_hands_it_out(sim: RunningSim,
                                                                          client: httpx.Client) -> None:
    items = Inventory.model_validate_json(client.get("/api/inventory", params={"limit": 2}).content).items
    credentials = [d.endpoint_credential.get_secret_value() for d in items]
    assert len(set(credentials)) == 2 and all(len(c) == 64 for c in credentials)
    assert credentials == [sim.sim.credential(d.serial) for d in items]  # what the devices open seals with


EST_PASSWORD = "est-Password-sealed-only-4K"


def est_configuration(name: str = "vpn-est") -> EnrollmentParameters:
    return EnrollmentParameters(name=name, enrollment_type="est", options={
        "enrollment_url": "https://ca.example.net/.well-known/est/", "username": "fw", "password": EST_PASSWORD})


def self_signed_pkcs12(passphrase: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpn.example.com")])
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return pkcs12.serialize_key_and_certificates(b"vpn", key, cert, None,
                                                 serialization.BestAvailableEncryption(passphrase.encode()))


def flipped(sealed: SealedConfiguration) -> dict:
    """The sealed configuration with one bit of its ciphertext changed."""
    ciphertext = bytearray(base64.b64decode(sealed.wire["sealed"]["ciphertext"]))
    ciphertext[-1] ^= 1
    return {**sealed.wire, "sealed": {**sealed.wire["sealed"], "ciphertext": base64.b64encode(ciphertext).decode()}}


def test_a_device_opens_secrets_sealed_to_its_credential_and_proves_it(sim: RunningSim, client: httpx.Client) -> None:
    serial = "FTD-000101"
    credential, params = sim.sim.credential(serial), est_configuration()
    sealed = seal_configuration(params, credential=credential, serial=serial)
    answer = client.put(f"/api/devices/{serial}/trustpoints/vpn-est", json=sealed.wire)
    assert answer.status_code == 200, answer.text
    proof = TrustpointState.model_validate_json(answer.content).proof
    assert proof_matches(credential, sealed.nonce, serial, proof)
    assert not proof_matches(credential, os.urandom(32), serial, proof)  # a proof for this nonce only
    assert sim.sim.fleet.get(serial).trustpoints["vpn-est"].params == params  # the password opened, as sent
    assert EST_PASSWORD not in answer.text and credential not in answer.text
    assert client.get(f"/api/devices/{serial}/trustpoints/vpn-est").json()["proof"] is None  # nothing sealed asked

    # An enroll request carrying its configuration: a PKCS#12 file and its passphrase, sealed.
    file = base64.b64encode(self_signed_pkcs12("p12-Passphrase-9")).decode()
    p12 = EnrollmentParameters(name="vpn-p12", enrollment_type="pkcs12",
                               options={"pkcs12_base64": file, "passphrase": "p12-Passphrase-9"})
    sealed = seal_configuration(p12, credential=credential, serial=serial)
    enrolled = client.post(f"/api/devices/{serial}/trustpoints/vpn-p12/enroll",
                           json={"mode": "enroll", "configuration": sealed.wire})
    assert enrolled.status_code == 200, enrolled.text
    state = TrustpointState.model_validate_json(enrolled.content)
    assert state.identity_status == "available" and proof_matches(credential, sealed.nonce, serial, state.proof)


def test_a_device_refuses_sealed_secrets_it_cannot_open_and_applies_nothing(sim: RunningSim,
                                                                            client: httpx.Client) -> None:
    serial, other = "FTD-000102", "FTD-000103"
    sealed = seal_configuration(est_configuration(), credential=sim.sim.credential(serial), serial=serial)
    not_its_own = seal_configuration(est_configuration(), credential=sim.sim.credential(other), serial=serial)
    unreadable = {
        # Replayed to another device, or to another trustpoint of the same device.
        "another device": client.put(f"/api/devices/{other}/trustpoints/vpn-est", json=sealed.wire),
        "another trustpoint": client.put(f"/api/devices/{serial}/trustpoints/vpn-other",
                                         json={**sealed.wire, "name": "vpn-other"}),
        "changed ciphertext": client.put(f"/api/devices/{serial}/trustpoints/vpn-est", json=flipped(sealed)),
        "changed in an enroll request": client.post(f"/api/devices/{serial}/trustpoints/vpn-est/enroll",
                                                    json={"mode": "enroll", "configuration": flipped(sealed)}),
        "sealed to another credential": client.put(f"/api/devices/{serial}/trustpoints/vpn-est", json=not_its_own.wire),
    }
    for why, answer in unreadable.items():
        assert (answer.status_code, answer.json()["code"]) == (401, "sealed_configuration_unreadable"), why
        assert "could not open the sealed secret options" in answer.json()["message"], why
    too_large = {**sealed.wire, "sealed": {"nonce": sealed.wire["sealed"]["nonce"], "ciphertext": "A" * 100_000}}
    answer = client.put(f"/api/devices/{serial}/trustpoints/vpn-est", json=too_large)
    assert (answer.status_code, answer.json()["code"]) == (413, "payload_too_large")
    answer = client.put(f"/api/devices/{serial}/trustpoints/vpn-est", json={**sealed.wire, "sealed": "x"})
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_sealed_configuration")
    for device in (serial, other):
        assert client.get(f"/api/devices/{device}/trustpoints").json() == []


def test_a_fleet_key_gives_the_same_credentials_at_every_start() -> None:
    def first_credential(key: str) -> str:
        with start_in_thread(SimConfig(devices=1, credential_key=key)) as running, client_for(running) as c:
            item = Inventory.model_validate_json(c.get("/api/inventory").content).items[0]
            return item.endpoint_credential.get_secret_value()

    assert first_credential("fleet-key-1") == first_credential("fleet-key-1") != first_credential("fleet-key-2")


def test_the_fleet_key_comes_from_a_file_or_the_environment_and_is_never_shown(tmp_path, monkeypatch) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (tmp_path / "fleet.key").write_text("file-fleet-key\nignored\n")
    (tmp_path / "empty.key").write_text("\n")
    monkeypatch.delenv(CREDENTIAL_KEY_ENV, raising=False)
    assert config_from_args(parser.parse_args([])).credential_key == ""  # a random one at start
    monkeypatch.setenv(CREDENTIAL_KEY_ENV, "env-fleet-key")
    assert config_from_args(parser.parse_args([])).credential_key == "env-fleet-key"
    config = config_from_args(parser.parse_args(["--credential-key-file", str(tmp_path / "fleet.key")]))
    assert config.credential_key == "file-fleet-key" and "fleet-key" not in repr(config)
    for name, says in (("empty.key", "holds no key"), ("missing.key", "No such file")):
        with pytest.raises(ConfigurationError, match=says):
            config_from_args(parser.parse_args(["--credential-key-file", str(tmp_path / name)]))


def test_inventory_rejects_bad_paging(client: httpx.Client) -> None:
    for params in ({"offset": -1}, {"limit": 0}, {"limit": "many"}):
        response = client.get("/api/inventory", params=params)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_paging"


def test_models_and_addresses_repeat_with_the_seed() -> None:
    def fleet_view(seed: int) -> list[tuple[str, str]]:
        with start_in_thread(SimConfig(devices=40, seed=seed)) as running, client_for(running) as c:
            items = Inventory.model_validate_json(c.get("/api/inventory").content).items
        return [(d.model, d.ip_address) for d in items]

    view = fleet_view(11)
    assert fleet_view(11) == view
    assert len({model for model, _ in view}) > 1
    assert any(":" in ip for _, ip in view), "some devices are addressed over IPv6"


# --- self-signed enrollment --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("key_type", "key_size", "algorithm", "bits"),
    [("ecdsa", 256, ec.EllipticCurvePublicKey, 256), ("rsa", 2048, rsa.RSAPublicKey, 2048),
     ("eddsa", 256, ed25519.Ed25519PublicKey, None)],
)
def test_self_signed_enrollment_installs_a_matching_certificate(
    client: httpx.Client, key_type: str, key_size: int, algorithm: type, bits: int | None
) -> None:
    device = "/api/devices/FTD-000011"
    name = f"self-{key_type}"
    configured = client.put(f"{device}/trustpoints/{name}", json=configuration(name, key_type=key_type,
                                                                             key_size=key_size))
    state = TrustpointState.model_validate_json(configured.content)
    assert (state.ca_status, state.identity_status, state.certificates) == ("in_progress", "in_progress", [])

    state = configure_and_enroll(client, device, configuration(name, key_type=key_type, key_size=key_size))
    assert (state.ca_status, state.identity_status, state.error_code) == ("available", "available", None)
    roles = sorted((c.role, c.chain_position) for c in state.certificates)
    assert roles == [("ca", 0), ("identity", 0)]
    assert len({c.pem for c in state.certificates}) == 1, "the device is its own CA: one certificate"

    cert = identity_certificate(state)
    verify_self_signature(cert)
    assert cert.issuer == cert.subject
    subject = {a.oid: a.value for a in cert.subject}
    assert subject[NameOID.COMMON_NAME] == "vpn.example.com"
    assert subject[NameOID.ORGANIZATION_NAME] == "Example Corp"
    assert subject[NameOID.COUNTRY_NAME] == "US"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ftd-000011.fleet.example"]
    assert isinstance(cert.public_key(), algorithm)
    if bits is not None:
        assert cert.public_key().key_size == bits  # type: ignore[union-attr]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30

    listed = TRUSTPOINT_LIST.validate_json(client.get(f"{device}/trustpoints").content)
    assert name in [t.name for t in listed]


def test_certificate_carries_device_ip_and_serial_only_when_asked(client: httpx.Client) -> None:
    device = "/api/devices/FTD-000010"  # an IPv6-addressed device
    body = configuration("plain", include_fqdn=False)
    plain = identity_certificate(configure_and_enroll(client, device, body))
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.SubjectAlternativeName)

    body = configuration("full", include_device_ip=True, include_serial_number=True)
    cert = identity_certificate(configure_and_enroll(client, device, body))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["2001:db8::a"]
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "FTD-000010"


def test_re_enroll_makes_a_new_key_pair_and_a_repeated_enroll_changes_nothing(client: httpx.Client) -> None:
    body = configuration("renewing")
    first = identity_certificate(configure_and_enroll(client, DEVICE, body))
    repeated = identity_certificate(configure_and_enroll(client, DEVICE, body))
    assert repeated == first, "a redelivered enroll keeps the installed certificate"

    renewed = identity_certificate(configure_and_enroll(client, DEVICE, body, mode="re_enroll"))
    assert public_der(renewed) != public_der(first)
    assert renewed.serial_number != first.serial_number
    stored = TrustpointState.model_validate_json(client.get(f"{DEVICE}/trustpoints/renewing").content)
    assert identity_certificate(stored) == renewed


def test_repeated_deliveries_of_one_enrollment_get_one_certificate(client: httpx.Client) -> None:
    # Four deliveries of the same job at once, each pushing the configuration and enrolling.
    body = configuration("raced", key_type="rsa", key_size=2048)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        states = list(pool.map(lambda _: configure_and_enroll(client, DEVICE, body), range(4)))
    assert {s.identity_status for s in states} == {"available"}
    serials = {identity_certificate(s).serial_number for s in states}
    assert len(serials) == 1, "a repeated enroll waits for the one under way instead of racing it"


def test_deleted_trustpoint_is_gone(client: httpx.Client) -> None:
    configure_and_enroll(client, DEVICE, configuration("doomed"))
    assert client.delete(f"{DEVICE}/trustpoints/doomed").status_code == 204
    response = client.get(f"{DEVICE}/trustpoints/doomed")
    assert response.status_code == 404
    assert response.json()["code"] == "trustpoint_not_found"
    assert client.delete(f"{DEVICE}/trustpoints/doomed").status_code == 204, "deleting twice is fine"
    assert client.post(f"{DEVICE}/trustpoints/doomed/enroll", json={}).status_code == 404


def test_unknown_device_is_404_with_a_code(client: httpx.Client) -> None:
    for path in ("/api/devices/FTD-999999", "/api/devices/nonsense/trustpoints", "/api/devices/FTD-000000"):
        response = client.get(path)
        assert response.status_code == 404
        body = response.json()
        assert body["code"] == "device_not_found" and "FTD-000001" in body["message"]


def test_an_unknown_endpoint_says_where_the_api_is(client: httpx.Client) -> None:
    response = client.get("/api/trustpoints")
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "not_found"
    assert body["message"] == ("no such endpoint: /api/trustpoints; a device's API is under /api/devices/<serial>/ "
                               "(trustpoints, keyring/default, weak-crypto, ca-bundle)")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"key_size": 512}, "invalid_key_size"),
        ({"key_type": "dsa"}, "invalid_key_type"),
        ({"enrollment_type": "carrier_pigeon"}, "invalid_enrollment_type"),
        ({"include_fqdn": "yes"}, "invalid_configuration"),
        ({"validity_days": 0}, "invalid_validity"),
        ({"subject": {"country": "USA"}}, "invalid_country"),
        ({"subject": {"nickname": "x"}}, "invalid_subject"),
        ({"colour": "blue"}, "invalid_configuration"),
        ({"name": "other"}, "name_mismatch"),
        ({"options": {"weak_crypto": "please"}}, "invalid_configuration"),
    ],
)
@pytest.mark.parametrize("sent_with", ["put", "enroll"])
def test_bad_configuration_is_refused_with_a_code(client: httpx.Client, change: dict, code: str,
                                                  sent_with: str) -> None:
    body = {**configuration("bad-config"), **change}
    if sent_with == "put":
        response = client.put(f"{DEVICE}/trustpoints/bad-config", json=body)
    else:  # configured and enrolled in one request: refused as a PUT would be, nothing enrolled
        response = client.post(f"{DEVICE}/trustpoints/bad-config/enroll",
                               json={"mode": "enroll", "configuration": body})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert response.json()["message"]
    assert client.get(f"{DEVICE}/trustpoints/bad-config").status_code == 404, "nothing half-configured"


def test_one_request_configures_and_enrolls_a_new_trustpoint(client: httpx.Client) -> None:
    device = "/api/devices/FTD-000004"
    body = configuration("one-trip", subject={"common_name": "one.example.com"})
    answer = client.post(f"{device}/trustpoints/one-trip/enroll", json={"mode": "enroll", "configuration": body})
    assert answer.status_code == 200, answer.text
    state = TrustpointState.model_validate_json(answer.content)
    assert (state.ca_status, state.identity_status) == ("available", "available")
    assert identity_certificate(state).subject.rfc4514_string().startswith("CN=one.example.com")
    # The configuration stays on the device: a later enroll without one uses it.
    again = client.post(f"{device}/trustpoints/one-trip/enroll", json={"mode": "re_enroll"})
    assert identity_certificate(TrustpointState.model_validate_json(again.content)).subject == \
        identity_certificate(state).subject


def test_malformed_requests_are_refused_not_crashed(client: httpx.Client) -> None:
    cases = [
        client.put(f"{DEVICE}/trustpoints/x", content=b"{not json"),
        client.put(f"{DEVICE}/trustpoints/x", json=["a", "list"]),
        client.put(f"{DEVICE}/trustpoints/bad%20name", json=configuration("bad name")),
        client.post(f"{DEVICE}/trustpoints/x/enroll", json={"mode": "sideways"}),
        client.put(f"{DEVICE}/weak-crypto", json={"enabled": "maybe"}),
    ]
    assert [r.status_code for r in cases] == [422] * len(cases)
    assert [r.json()["code"] for r in cases] == [
        "invalid_json", "invalid_configuration", "invalid_name", "invalid_request", "invalid_request",
    ]
    assert client.delete("/api/inventory").json()["code"] == "method_not_allowed"


# --- weak crypto and enrollment types not simulated yet ----------------------------------------

def test_rsa_1024_needs_weak_crypto_enabled_on_the_device(client: httpx.Client) -> None:
    device = "/api/devices/FTD-000021"
    body = configuration("legacy", key_type="rsa", key_size=1024)
    refused = configure_and_enroll(client, device, body)
    assert (refused.identity_status, refused.error_code) == ("failed", "weak_crypto")
    assert refused.retryable is False
    assert "RSA-1024" in refused.error_message and "enable weak-crypto" in refused.error_message
    assert refused.certificates == []

    info = client.put(f"{device}/weak-crypto", json={"enabled": True})
    assert DeviceInfo.model_validate_json(info.content).weak_crypto is True
    accepted = configure_and_enroll(client, device, body)
    assert (accepted.identity_status, accepted.error_code) == ("available", None)
    assert identity_certificate(accepted).public_key().key_size == 1024  # type: ignore[union-attr]


def test_weak_crypto_deployed_with_the_trustpoint_applies_first(client: httpx.Client) -> None:
    device = "/api/devices/FTD-000022"
    allowed = configure_and_enroll(client, device, configuration(
        "legacy", key_type="rsa", key_size=1024, options={"weak_crypto": True}))
    assert allowed.identity_status == "available"
    assert client.get(device).json()["weak_crypto"] is True

    refused = configure_and_enroll(client, device, configuration(
        "legacy", key_type="rsa", key_size=1024, options={"weak_crypto": False}), mode="re_enroll")
    assert refused.error_code == "weak_crypto"
    assert client.get(device).json()["weak_crypto"] is False


# The enrollment types themselves are tested beside their clients: tests/integration/device_sim/ca_client/
# (EST, SCEP), tests/unit/device_sim/test_manual.py and tests/e2e/test_manual_pkcs12.py (manual, PKCS12).
@pytest.mark.parametrize("enrollment_type", ["est", "scep"])
def test_a_ca_enrollment_without_its_url_fails_clearly(client: httpx.Client, enrollment_type: str) -> None:
    state = configure_and_enroll(client, DEVICE, configuration(f"tp-{enrollment_type}",
                                                               enrollment_type=enrollment_type))
    assert state.identity_status == "failed"
    assert state.error_code == "invalid_enrollment_url" and state.retryable is False
    assert "has no enrollment URL" in state.error_message


# --- the default keyring -------------------------------------------------------------------------

def test_default_keyring_is_made_on_first_access_and_valid(sim: RunningSim, client: httpx.Client) -> None:
    device = sim.fleet.find("FTD-000030")
    assert device is not None and device.keyring is None, "no keyring before anyone asks"
    keyring = KeyringState.model_validate_json(client.get("/api/devices/FTD-000030/keyring/default").content)
    assert (keyring.name, keyring.valid, keyring.reason) == ("default", True, None)
    cert = x509.load_pem_x509_certificate(keyring.certificate_pem.encode())
    verify_self_signature(cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ftd-000030.fleet.example"
    again = KeyringState.model_validate_json(client.get("/api/devices/FTD-000030/keyring/default").content)
    assert again.certificate_pem == keyring.certificate_pem


def test_expired_keyrings_are_reported_and_regenerated() -> None:
    with start_in_thread(SimConfig(devices=30, seed=5, expired_keyrings=0.5)) as running, \
            client_for(running) as c:
        serials = [f"FTD-{i:06d}" for i in range(1, 31)]
        states = {
            s: KeyringState.model_validate_json(c.get(f"/api/devices/{s}/keyring/default").content)
            for s in serials
        }
        expired = sorted(s for s, k in states.items() if not k.valid)
        assert 5 <= len(expired) <= 25
        assert {states[s].reason for s in expired} == {"expired"}
        cert = x509.load_pem_x509_certificate(states[expired[0]].certificate_pem.encode())
        assert cert.not_valid_after_utc < utcnow()

        regenerated = c.post(f"/api/devices/{expired[0]}/keyring/default/regenerate")
        fresh = KeyringState.model_validate_json(regenerated.content)
        assert (fresh.valid, fresh.reason) == (True, None)
        assert fresh.certificate_pem != states[expired[0]].certificate_pem
    with start_in_thread(SimConfig(devices=30, seed=5, expired_keyrings=0.5)) as running, \
            client_for(running) as c:
        again = [f"FTD-{i:06d}" for i in range(1, 31)
                 if not c.get(f"/api/devices/FTD-{i:06d}/keyring/default").json()["valid"]]
    assert again == expired, "the same seed expires the same devices"


# --- faults ---------------------------------------------------------------------------------------

def unreachable_devices(seed: int) -> list[str]:
    with start_in_thread(SimConfig(devices=60, seed=seed, unreachable_rate=0.25)) as running, \
            client_for(running) as c:
        found = []
        for i in range(1, 61):
            response = c.get(f"/api/devices/FTD-{i:06d}")
            if response.status_code == 503:
                assert response.json() == {"code": "device_unreachable",
                                           "message": f"device FTD-{i:06d} is unreachable"}
                assert c.get(f"/api/devices/FTD-{i:06d}/trustpoints").status_code == 503, "every request"
                found.append(f"FTD-{i:06d}")
            else:
                assert response.status_code == 200
        assert c.get("/api/inventory").status_code == 200, "the inventory is not a device"
        assert c.get("/api/stats").json()["faults"]["unreachable"] == 2 * len(found)
    return found


def test_unreachable_devices_repeat_with_the_seed() -> None:
    first = unreachable_devices(seed=42)
    assert 5 <= len(first) <= 28
    assert unreachable_devices(seed=42) == first
    assert unreachable_devices(seed=43) != first


def test_devices_taken_offline_are_unreachable_until_brought_back() -> None:
    with start_in_thread(SimConfig(devices=10, seed=5)) as running, client_for(running) as c:
        taken = c.put("/api/offline", json={"serials": ["FTD-000003", "FTD-000004"]})
        assert taken.status_code == 200 and taken.json() == {"offline": ["FTD-000003", "FTD-000004"]}
        for path in ("/api/devices/FTD-000003", "/api/devices/FTD-000004/ca-bundle"):
            answer = c.get(path)
            assert answer.status_code == 503, path
            assert answer.json()["code"] == "device_unreachable"
        assert c.get("/api/devices/FTD-000005").status_code == 200
        # A refused change leaves the devices offline as they were.
        unknown = c.put("/api/offline", json={"serials": ["FTD-000003", "FTD-000099"]})
        assert (unknown.status_code, unknown.json()["code"]) == (404, "device_not_found")
        for body in ({"serials": "FTD-000003"}, [1], {"serials": [3]}):
            refused = c.put("/api/offline", json=body)
            assert (refused.status_code, refused.json()["code"]) == (422, "invalid_request"), body
        assert c.get("/api/devices/FTD-000004").status_code == 503
        assert c.get("/api/stats").json()["faults"]["offline"] == 3

        assert c.put("/api/offline", json={"serials": []}).json() == {"offline": []}
        assert c.get("/api/devices/FTD-000003").status_code == 200
        assert c.get("/api/devices/FTD-000004/ca-bundle").status_code == 200


def test_error_rate_one_fails_every_device_request() -> None:
    with start_in_thread(SimConfig(devices=5, error_rate=1.0)) as running, client_for(running) as c:
        for path in ("/api/devices/FTD-000001", "/api/devices/FTD-000002/keyring/default"):
            response = c.get(path)
            assert response.status_code == 500
            assert response.json()["code"] == "device_error"
        assert c.get("/api/inventory").status_code == 200
        assert c.get("/api/stats").json()["faults"] == {"error": 2}


def test_error_rate_is_roughly_honoured_and_repeats() -> None:
    def statuses() -> list[int]:
        config = SimConfig(devices=5, seed=9, error_rate=0.3)
        with start_in_thread(config) as running, client_for(running) as c:
            return [c.get(f"/api/devices/FTD-00000{1 + i % 5}").status_code for i in range(200)]

    first = statuses()
    assert 30 <= first.count(500) <= 90
    assert statuses() == first


class Sleeps:
    """The simulator's sleep as a test drives it: every wait asked for is recorded, and returns
    only once ``let_go`` is set (at once when made with ``hold=False``)."""

    def __init__(self, *, hold: bool = True) -> None:
        self.asked: list[float] = []
        self.let_go = threading.Event()
        if not hold:
            self.let_go.set()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        while not self.let_go.is_set():  # waits for the test's signal, not for the seconds asked
            await asyncio.sleep(0.005)


class Gathering:
    """A sleep that returns once ``size`` requests sleep at the same time (or after a generous
    timeout, so a simulator that serialises them fails the test instead of hanging it)."""

    def __init__(self, size: int) -> None:
        self.size, self.asked, self.most = size, [], 0
        self._sleeping = 0
        self._all_there: asyncio.Event | None = None

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        self._all_there = self._all_there or asyncio.Event()
        self._sleeping += 1
        self.most = max(self.most, self._sleeping)
        if self._sleeping >= self.size:
            self._all_there.set()
        try:
            await asyncio.wait_for(self._all_there.wait(), 10)
        except TimeoutError:
            self._all_there.set()  # never all at once: let the rest through and fail on ``most``
        finally:
            self._sleeping -= 1


def test_timeout_holds_the_request_for_hang_seconds_then_answers_504() -> None:
    sleeps = Sleeps()
    with start_in_thread(SimConfig(devices=3, timeout_rate=1.0, hang_seconds=0.5), sleep=sleeps) as running, \
            client_for(running) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(c.get, "/api/devices/FTD-000001")
        wait_until(lambda: sleeps.asked == [0.5], what="the request held for hang_seconds")
        assert not answer.done(), "answered before its hang was over"
        sleeps.let_go.set()
        response = answer.result(timeout=10)
    assert response.status_code == 504
    assert response.json() == {"code": "device_timeout", "message": "device FTD-000001 did not answer within 0.5 s"}


def test_stop_does_not_wait_out_hanging_requests() -> None:
    sleeps = Sleeps()  # never let go: only the stop can end the hang
    running = start_in_thread(SimConfig(devices=3, timeout_rate=1.0, hang_seconds=60), sleep=sleeps)
    answers: list[int] = []

    def hang() -> None:
        with httpx.Client(timeout=30) as c:
            answers.append(c.get(f"{running.url}/api/devices/FTD-000001").status_code)

    thread = threading.Thread(target=hang)
    thread.start()
    try:
        wait_until(lambda: sleeps.asked == [60], what="the request held")
        running.stop()
        thread.join(10)
    finally:
        sleeps.let_go.set()
    assert not thread.is_alive() and answers == [504]


def test_latency_is_applied_to_each_device_request_not_to_the_inventory() -> None:
    sleeps = Sleeps()
    with start_in_thread(SimConfig(devices=5, latency_ms=300), sleep=sleeps) as running, \
            client_for(running) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert c.get("/api/inventory").status_code == 200
        assert sleeps.asked == [], "the inventory is not a device: no latency"
        answer = pool.submit(c.get, "/api/devices/FTD-000001")
        wait_until(lambda: sleeps.asked == [0.3], what="the device request's latency")
        assert not answer.done(), "answered before its latency was over"
        sleeps.let_go.set()
        assert answer.result(timeout=10).status_code == 200
        assert c.get("/api/devices/FTD-000002/keyring/default").status_code == 200
    assert sleeps.asked == [0.3, 0.3]


def test_requests_wait_out_their_latency_in_parallel() -> None:
    gathering = Gathering(25)
    with start_in_thread(SimConfig(devices=50, latency_ms=300), sleep=gathering) as running, \
            concurrent.futures.ThreadPoolExecutor(25) as pool, \
            httpx.Client(base_url=running.url, timeout=30, limits=httpx.Limits(max_connections=25)) as many:
        codes = list(pool.map(lambda i: many.get(f"/api/devices/FTD-{i + 1:06d}").status_code, range(50)))
    assert codes == [200] * 50
    assert gathering.asked == [0.3] * 50
    assert gathering.most == 25, "25 requests over 25 connections all wait out their latency at once"


def test_latency_range_stays_within_bounds_and_varies() -> None:
    sleeps = Sleeps(hold=False)
    config = SimConfig(devices=10, latency_min_ms=30, latency_max_ms=90)
    with start_in_thread(config, sleep=sleeps) as running, client_for(running) as c:
        for i in range(12):
            assert c.get(f"/api/devices/FTD-{1 + i % 10:06d}").status_code == 200
    assert len(sleeps.asked) == 12
    assert all(0.03 <= seconds <= 0.09 for seconds in sleeps.asked), sleeps.asked
    assert len(set(sleeps.asked)) > 6, "latency varies within the range"


# --- configuration, start-up and the command --------------------------------------------------------

@pytest.mark.parametrize(
    "options",
    [{"devices": 0}, {"error_rate": 1.5}, {"error_rate": 0.6, "timeout_rate": 0.6},
     {"latency_min_ms": 10}, {"latency_min_ms": 50, "latency_max_ms": 10},
     {"latency_ms": 5, "latency_min_ms": 1, "latency_max_ms": 2}, {"port": 70000}, {"hang_seconds": 0},
     {"processes": 0}, {"devices": 2, "processes": 3}, {"public_url": "http://a:1,http://b:2"},
     {"processes": 2, "public_url": "http://a:1,ftp://b:2"}],
)
def test_bad_simulator_configuration_is_refused(options: dict) -> None:
    with pytest.raises(ConfigurationError):
        SimConfig(**options)


def test_fifty_thousand_devices_are_served() -> None:
    running = start_in_thread(SimConfig(devices=50_000, seed=1, expired_keyrings=0.1, unreachable_rate=0.01))
    try:
        with client_for(running) as c:
            last = c.get("/api/inventory", params={"offset": 49_999, "limit": 10}).json()
            assert [d["serial"] for d in last["items"]] == ["FTD-050000"]
            # About one device in a hundred is unreachable: the same ones for the same seed.
            serials = [f"FTD-{n:06d}" for n in range(49_001, 50_001)]
            unreachable = [serial for serial in serials if running.sim.faults.is_unreachable(serial)]
            reachable = [serial for serial in serials if serial not in unreachable]
            assert 0 < len(unreachable) < 40
            assert c.get(f"/api/devices/{reachable[-1]}/trustpoints").status_code == 200
            refused = c.get(f"/api/devices/{unreachable[-1]}/trustpoints")
            assert (refused.status_code, refused.json()["code"]) == (503, "device_unreachable")
    finally:
        running.stop()


def device_sim_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", "device-sim", *args]


def test_command_serves_until_terminated(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = subprocess.run(device_sim_command("--error-rate", "2"), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert (bad.returncode, bad.stderr) == (
        2, "error: configuration_error: error_rate is a fraction from 0 to 1, not 2.0\n")

    proc = subprocess.Popen(device_sim_command("--devices", "25", "--port", "0", "--seed", "4", "--latency-ms", "1"),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert line.startswith("device-sim ready: http://127.0.0.1:") and line.endswith(" devices=25")
        url = line.split()[2]
        assert httpx.get(f"{url}/api/inventory").json()["total"] == 25
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_command_on_a_port_in_use_says_it_cannot_listen_there() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(device_sim_command("--devices", "3", "--port", str(port)), cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: cannot_listen: cannot listen on 127.0.0.1:{port}: Address already in use")


def test_public_url_is_what_devices_report_as_their_management_url():
    from services.device_sim.config import SimConfig
    from services.device_sim.server import start_in_thread

    with start_in_thread(SimConfig(devices=3, public_url="http://device-sim:8400/")) as sim:
        items = httpx.get(f"{sim.url}/api/inventory").json()["items"]
    assert [d["management_url"] for d in items] == [
        f"http://device-sim:8400/api/devices/{d['serial']}" for d in items
    ]
