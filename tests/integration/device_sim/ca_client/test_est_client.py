"""The device's EST client against the real CA simulator, as a worker sees it: over the device
simulator's management API on loopback, with the CA serving HTTPS on 127.0.0.1 and ::1.

Enrollment installs the CA chain and an identity certificate for the device's own key;
re-enrollment renews with a new key over simplereenroll; each failure names its cause with a
stable code; a request the CA holds stays pending until an operator approves it."""

from __future__ import annotations

import errno
import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.ca_sim.pending import approve, list_requests
from services.ca_sim.service import RunningCa
from services.ca_sim.service import start_in_thread as start_ca
from services.device_sim.ca_client.est_client import EstOptions
from services.device_sim.ca_client.scep_client import ScepOptions
from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim
from services.device_sim.server import start_in_thread as start_sim
from shared.device_api import TrustpointState
from tests.support.ca_peers import openssl_verify, spki, write_pem
from tests.support.procs import free_port
from tests.support.tls import make_ca
from tests.support.waiting import wait_until

USER, PASSWORD = "ftd-enroller", "Est-Secret-Never-Shown-9"
SUBJECT = {"common_name": "vpn.example.com", "organization": "Example Corp", "country": "US"}


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> Iterator[RunningCa]:
    hosts = ["127.0.0.1", "::1"] if socket.has_ipv6 else ["127.0.0.1"]
    running = start_ca(tmp_path_factory.mktemp("est-ca"), host=hosts, est_user=USER, est_password=PASSWORD,
                       retry_after=1)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sim(ca) -> Iterator[RunningSim]:
    """Devices that trust the CA's TLS root, and wait at most 1 s for a CA holding a request."""
    with start_sim(SimConfig(devices=40, seed=5, trust_anchors=(str(ca.tls_ca),), ca_wait_seconds=1.0)) as s:
        yield s


@pytest.fixture(scope="module")
def bare_sim() -> Iterator[RunningSim]:
    """Devices with no trust anchors at all."""
    with start_sim(SimConfig(devices=10, seed=6)) as s:
        yield s


class Device:
    """One simulated device, driven as the worker drives it."""

    def __init__(self, sim: RunningSim, serial: str) -> None:
        self.sim, self.serial = sim, serial
        self.http = httpx.Client(base_url=f"{sim.url}/api/devices/{serial}", timeout=30)

    def configure(self, name: str, url: str, **options) -> None:
        body = {
            "name": name, "enrollment_type": "est", "key_type": "ecdsa", "key_size": 256, "subject": SUBJECT,
            "include_fqdn": True, "options": {"enrollment_url": url, "username": USER, "password": PASSWORD,
                                              **options},
        }
        response = self.http.put(f"/trustpoints/{name}", json=body)
        assert response.status_code == 200, response.text
        assert PASSWORD not in response.text

    def enroll(self, name: str, mode: str = "enroll") -> TrustpointState:
        response = self.http.post(f"/trustpoints/{name}/enroll", json={"mode": mode})
        assert response.status_code == 200, response.text
        assert PASSWORD not in response.text and "PRIVATE KEY" not in response.text
        return TrustpointState.model_validate_json(response.content)

    def get(self, name: str) -> TrustpointState:
        return TrustpointState.model_validate_json(self.http.get(f"/trustpoints/{name}").content)

    def key_of(self, name: str):
        """The trustpoint's private key, read inside the simulator: it never leaves the device."""
        return self.sim.fleet.find(self.serial).trustpoints[name].private_key


def certificates(state: TrustpointState) -> dict[tuple[str, int], x509.Certificate]:
    return {(c.role, c.chain_position): x509.load_pem_x509_certificate(c.pem.encode())
            for c in state.certificates}


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def colon_hex(digest: str) -> str:
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2)).upper()


# --- enrolling ---------------------------------------------------------------------------------

URL_FORMS = {
    "host and port": lambda ca: f"{ca.est_url}/",
    "IPv6 literal": lambda ca: ca.est_urls[-1] + "/",
    "well-known path with a label": lambda ca: f"{ca.est_url}/.well-known/est/asa/",
    "label as the path": lambda ca: f"{ca.est_url}/asa",
}


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_enrollment_installs_the_ca_chain_and_a_certificate_for_the_device_key(ca, sim, tmp_path, form):
    if form == "IPv6 literal" and not ca.est_urls[-1].startswith("https://[::1]"):
        pytest.skip("no IPv6 loopback here")
    device = Device(sim, "FTD-000001")
    name = f"vpn-{list(URL_FORMS).index(form)}"
    device.configure(name, URL_FORMS[form](ca))
    state = device.enroll(name)

    assert (state.ca_status, state.identity_status, state.error_code) == ("available", "available", None)
    certs = certificates(state)
    assert set(certs) == {("identity", 0), ("ca", 0), ("ca", 1)}
    assert certs["ca", 0] == ca.ca.issuing and certs["ca", 1] == ca.ca.root  # issuing first, then root
    identity = certs["identity", 0]
    openssl_verify(write_pem(tmp_path / "identity.pem", identity),
                   root=write_pem(tmp_path / "root.pem", certs["ca", 1]),
                   untrusted=write_pem(tmp_path / "issuing.pem", certs["ca", 0]))
    key = device.key_of(name)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert spki(identity.public_key()) == spki(key.public_key())
    assert identity.subject.rfc4514_string() == "CN=vpn.example.com,O=Example Corp,C=US"
    san = identity.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ftd-000001.fleet.example"]
    eku = list(identity.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    if "label" in form:  # the label reached the CA's "asa" profile: client authentication only
        assert eku == [ExtendedKeyUsageOID.CLIENT_AUTH]
    else:
        assert eku == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_an_rsa_device_key_is_made_and_enrolled(ca, sim):
    # RSA key generation runs off the event loop the enrollment itself runs on.
    device = Device(sim, "FTD-000011")
    body = {"name": "rsa", "enrollment_type": "est", "key_type": "rsa", "key_size": 2048, "subject": SUBJECT,
            "options": {"enrollment_url": f"{ca.est_url}/", "username": USER, "password": PASSWORD}}
    assert device.http.put("/trustpoints/rsa", json=body).status_code == 200
    state = device.enroll("rsa")
    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
    key = device.key_of("rsa")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert spki(certificates(state)["identity", 0].public_key()) == spki(key.public_key())


def test_re_enrollment_renews_with_a_new_key_over_the_current_certificate(ca, sim, tmp_path):
    device = Device(sim, "FTD-000002")
    device.configure("renew", f"{ca.est_url}/")
    first = certificates(device.enroll("renew"))["identity", 0]
    first_key = device.key_of("renew")
    assert certificates(device.enroll("renew"))["identity", 0] == first, "an enroll repeated changes nothing"

    # The CA's password changed since: only the certificate (TLS client authentication) can renew.
    device.configure("renew", f"{ca.est_url}/", password="no-longer-valid")
    state = device.enroll("renew", mode="re_enroll")

    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
    second = certificates(state)["identity", 0]
    assert second.serial_number != first.serial_number and second.subject == first.subject
    assert spki(second.public_key()) != spki(first_key.public_key())
    assert spki(second.public_key()) == spki(device.key_of("renew").public_key())
    openssl_verify(write_pem(tmp_path / "second.pem", second), root=ca.tls_ca,
                   untrusted=write_pem(tmp_path / "issuing.pem", ca.ca.issuing))


def test_a_renewal_the_ca_refuses_for_an_expired_certificate_enrolls_anew_with_the_password(ca, sim, monkeypatch):
    device = Device(sim, "FTD-000003")
    device.configure("late", f"{ca.est_url}/")
    first = certificates(device.enroll("late"))["identity", 0]
    # The certificate ends between the device's look at it and the CA's: the CA refuses it (401).
    refused = []

    def expired_for_the_ca(authority, cert, *, now=None):
        refused.append(cert.serial_number)
        return f"the certificate {cert.subject.rfc4514_string()} has expired or is not valid yet"

    monkeypatch.setattr(type(ca.ca), "issued_by_us", expired_for_the_ca)
    state = device.enroll("late", mode="re_enroll")

    assert refused == [first.serial_number]  # simplereenroll was tried with the current certificate
    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
    second = certificates(state)["identity", 0]
    assert second.serial_number != first.serial_number and second.subject == first.subject
    assert spki(second.public_key()) == spki(device.key_of("late").public_key())


# --- failures a person can act on ----------------------------------------------------------------

def failed(state: TrustpointState, code: str, *, retryable: bool = False) -> str:
    assert state.identity_status == "failed", state
    assert (state.error_code, state.retryable) == (code, retryable), state.error_message
    assert PASSWORD not in (state.error_message or "")
    return state.error_message or ""


def test_unresolvable_ca_name(sim):
    device = Device(sim, "FTD-000003")
    device.configure("dns", "https://no-such-ca.invalid/")
    state = device.enroll("dns")
    message = failed(state, "ca_name_unresolved")
    assert message.startswith(
        "CA at https://no-such-ca.invalid/ unreachable: name no-such-ca.invalid not resolved")
    assert state.ca_status == "failed" and state.certificates == []


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_refused_connection_is_worth_retrying(sim, host):
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    port = free_port()
    url = f"https://{host}:{port}/" if host == "127.0.0.1" else f"https://[::1]:{port}/"
    device = Device(sim, "FTD-000004")
    device.configure("refused", url)
    message = failed(device.enroll("refused"), "ca_connection_refused", retryable=True)
    assert message.startswith(f"CA at {url} unreachable: connection refused")


def test_no_route_to_the_ca(sim):
    target = ("2001:db8::1", 443)  # documentation prefix: routed nowhere
    probe = socket.socket(socket.AF_INET6)
    probe.settimeout(2)
    try:
        probe.connect(target)
        reason = None
    except OSError as exc:
        reason = exc.errno
    finally:
        probe.close()
    if reason not in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        pytest.skip(f"this network does not answer 'no route' for {target[0]} (errno {reason})")
    device = Device(sim, "FTD-000005")
    device.configure("noroute", "https://[2001:db8::1]/")
    message = failed(device.enroll("noroute"), "ca_no_route", retryable=True)
    assert message.startswith("CA at https://[2001:db8::1]/ unreachable: no route to host 2001:db8::1")


def test_server_the_device_does_not_trust(ca, bare_sim):
    device = Device(bare_sim, "FTD-000001")
    device.configure("untrusted", f"{ca.est_url}/")
    message = failed(device.enroll("untrusted"), "ca_tls_verification_failed")
    assert message.startswith(
        f"CA at {ca.est_url}/: TLS verification failed: unable to get local issuer certificate")
    assert "trust anchors, and it has none" in message and "fingerprint" in message


def test_a_ca_bundle_holding_the_servers_ca_makes_the_device_trust_it(ca, bare_sim):
    device = Device(bare_sim, "FTD-000009")
    device.configure("bundled", f"{ca.est_url}/")
    other_ca = make_ca("Not This CA's Root")
    assert device.http.put("/ca-bundle", json={"version": "1", "pem": other_ca.pem}).status_code == 200

    message = failed(device.enroll("bundled"), "ca_tls_verification_failed")
    assert "the device's CA bundle version 1 (1 certificate)" in message

    bundle = other_ca.pem + ca.tls_ca.read_text()
    assert device.http.put("/ca-bundle", json={"version": "2", "pem": bundle}).status_code == 200
    state = device.enroll("bundled")
    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message

    # A device without that bundle, in the same fleet, still does not trust the server.
    other = Device(bare_sim, "FTD-000010")
    other.configure("bundled", f"{ca.est_url}/")
    failed(other.enroll("bundled"), "ca_tls_verification_failed")


def test_a_fingerprint_that_is_not_hex_is_refused_before_asking_the_ca(ca, bare_sim):
    device = Device(bare_sim, "FTD-000003")
    device.configure("pinned-typo", f"{ca.est_url}/", fingerprint="zz:" * 31 + "zz")
    message = failed(device.enroll("pinned-typo"), "invalid_est_configuration")
    assert message.startswith(f"fingerprint {'zz:' * 31 + 'zz'!r} is not a hex digest")


def test_the_options_a_device_holds_keep_their_secrets_out_of_repr():
    est = EstOptions(enrollment_url="https://ca.example.com/", username="enroller", password="Est-s3cret")
    scep = ScepOptions(enrollment_url="http://ca.example.com/", challenge="otp-s3cret")
    assert "Est-s3cret" not in repr(est) and "enroller" in repr(est)
    assert "otp-s3cret" not in repr(scep) and "ca.example.com" in repr(scep)


def test_wrong_fingerprint(ca, bare_sim):
    device = Device(bare_sim, "FTD-000002")
    device.configure("pinned-wrong", f"{ca.est_url}/", fingerprint="AB:" * 31 + "AB")
    message = failed(device.enroll("pinned-wrong"), "ca_tls_verification_failed")
    assert f"CA at {ca.est_url}/: TLS verification failed: no CA certificate it serves has the fingerprint " \
           f"{'ab' * 32}" in message
    assert fingerprint(ca.ca.issuing) in message and fingerprint(ca.ca.root) in message


def test_wrong_password_is_401_with_the_ca_chain_installed(ca, sim):
    device = Device(sim, "FTD-000006")
    device.configure("badpass", f"{ca.est_url}/", password="guess")
    state = device.enroll("badpass")
    message = failed(state, "ca_auth_failed")
    assert message.startswith(f"CA at {ca.est_url}/ refused simpleenroll: 401 Unauthorized; check the "
                              "username and password of the enrollment object")
    assert "guess" not in message
    assert state.ca_status == "available" and set(certificates(state)) == {("ca", 0), ("ca", 1)}


def test_ms2012_ipsec_certificate_is_refused_with_the_remedy(ca, sim):
    device = Device(sim, "FTD-000007")
    device.configure("ms-ipsec", f"{ca.est_url}/.well-known/est/ms2012-ipsec/")
    message = failed(device.enroll("ms-ipsec"), "ipsec_eku_rejected")
    assert "'IP security IKE intermediate'" in message
    assert "Duplicate the IPsec (Offline Request) template" in message and "IP security end system" in message

    device.configure("ms-endsystem", f"{ca.est_url}/.well-known/est/ms2012-endsystem/")
    assert device.enroll("ms-endsystem").identity_status == "available"  # the remedy's template works
    assert "ignore_ipsec_key_usage" in message  # the other way out
    device.configure("ms-ignored", f"{ca.est_url}/.well-known/est/ms2012-ipsec/",
                     validation={"ignore_ipsec_key_usage": True})
    assert device.enroll("ms-ignored").identity_status == "available"


# --- fingerprint pinning and ignored validation ----------------------------------------------------

@pytest.mark.parametrize("which", ["issuing", "root"])
def test_fingerprint_pins_the_ca_without_trust_anchors(ca, bare_sim, which):
    device = Device(bare_sim, "FTD-000003")
    pinned = ca.ca.issuing if which == "issuing" else ca.ca.root
    device.configure(f"pinned-{which}", f"{ca.est_url}/", fingerprint=colon_hex(fingerprint(pinned)))
    state = device.enroll(f"pinned-{which}")
    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
    assert certificates(state)["identity", 0].issuer == ca.ca.issuing.subject


def test_ignoring_server_validation_enrolls_without_trust_anchors(ca, bare_sim):
    device = Device(bare_sim, "FTD-000004")
    device.configure("lab", f"{ca.est_url}/", ignore_server_validation=True)
    state = device.enroll("lab")
    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message


# --- a request the CA holds for approval -----------------------------------------------------------

def held_requests(ca: RunningCa, subject: str) -> list:
    return [r for r in list_requests(ca.state_dir, status=None) if r.subject == subject]


def test_held_request_stays_pending_until_approved_then_the_device_installs_it(ca, sim):
    device = Device(sim, "FTD-000008")
    manual = f"{ca.est_url}/.well-known/est/ms2012-manual/"
    subject = {**SUBJECT, "common_name": "held.example.com"}
    body = {"name": "held", "enrollment_type": "est", "key_type": "ecdsa", "key_size": 256,
            "subject": subject, "options": {"enrollment_url": manual, "username": USER, "password": PASSWORD}}
    assert device.http.put("/trustpoints/held", json=body).status_code == 200

    state = device.enroll("held")
    assert (state.ca_status, state.identity_status) == ("available", "pending")
    assert set(certificates(state)) == {("ca", 0), ("ca", 1)}
    # A repeated enrollment (a redelivered job) asks about the same request, it files no second one.
    assert device.enroll("held").identity_status == "pending"
    (request,) = held_requests(ca, "CN=held.example.com,O=Example Corp,C=US")
    assert request.status == "pending"

    approve(ca.state_dir, request.id)
    # The device keeps asking in the background as the CA's Retry-After (1 s) says; a refresh sees it.
    deadline = time.monotonic() + 10
    while (state := device.get("held")).identity_status == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (state.ca_status, state.identity_status) == ("available", "available")
    identity = certificates(state)["identity", 0]
    assert spki(identity.public_key()) == spki(device.key_of("held").public_key())
    assert identity.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "held.example.com"
    assert [r.status for r in held_requests(ca, "CN=held.example.com,O=Example Corp,C=US")] == ["issued"]


def test_deleting_a_pending_trustpoint_stops_the_device_asking(ca, sim):
    device = Device(sim, "FTD-000009")
    device.configure("dropped", f"{ca.est_url}/.well-known/est/ms2012-manual/")
    assert device.enroll("dropped").identity_status == "pending"
    assert sim.sim.following("FTD-000009", "dropped")
    assert device.http.delete("/trustpoints/dropped").status_code == 204
    # At the CA's next Retry-After the device finds the trustpoint gone and stops asking, without
    # installing anything into it.
    wait_until(lambda: not sim.sim.following("FTD-000009", "dropped"), what="the device to stop asking")
    assert device.http.get("/trustpoints/dropped").json()["code"] == "trustpoint_not_found"


# --- configuration the device refuses --------------------------------------------------------------

def test_trust_anchor_file_without_certificates_is_refused_at_start(tmp_path: Path):
    from shared.errors import ConfigurationError

    bad = tmp_path / "anchor.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="holds no PEM certificate"):
        start_sim(SimConfig(devices=1, trust_anchors=(str(bad),)))
    with pytest.raises(ConfigurationError, match="cannot read it"):
        start_sim(SimConfig(devices=1, trust_anchors=(str(tmp_path / "missing.pem"),)))


@pytest.mark.parametrize(("url", "code"), [
    ("http://127.0.0.1/", "invalid_enrollment_url"),
    ("https://[::1/", "invalid_enrollment_url"),
])
def test_unusable_enrollment_url_is_refused_with_a_code(sim, url, code):
    device = Device(sim, "FTD-000010")
    device.configure("badurl", url)
    message = failed(device.enroll("badurl"), code)
    assert "https" in message
