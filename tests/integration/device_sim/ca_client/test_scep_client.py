"""The device's SCEP client against the real CA simulator, as a worker sees it: over the device
simulator's management API on loopback, with the CA serving SCEP (plain HTTP) on 127.0.0.1
and ::1.

Enrollment installs the CA chain, then an identity certificate for the device's own key;
re-enrollment renews with a new key over RenewalReq; a wrong fingerprint or challenge is refused
with a message saying what to fix; a request the CA holds stays pending until an operator
approves it; a CA that speaks only 3DES and SHA-1 is refused until weak-crypto is enabled.

A front end on loopback between the device and the simulator answers as other CAs do: GetCACert
as one DER certificate, or with RA certificates (one for encryption, one for signing); CertReps
in BER, signed again by whichever certificate the test names."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from services.ca_sim.pending import approve, list_requests
from services.ca_sim.scep_transactions import TransactionStore, transactions_db
from services.ca_sim.service import RunningCa
from services.ca_sim.service import start_in_thread as start_ca
from services.device_sim.ca_client.scep_transport import ScepEndpoint
from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim
from services.device_sim.server import start_in_thread as start_sim
from shared.device_api import TrustpointState
from shared.protocols import cms as scep_cms
from shared.protocols import scep
from shared.protocols.scep import transaction_id_for
from tests.support.ca_peers import openssl_verify, spki, write_pem
from tests.support.procs import free_port
from tests.support.scep_peers import ALL_LEVELS, ber_cert_rep, now, rsa_key, to_ber
from tests.support.waiting import wait_until

CHALLENGE = "Scep-Challenge-Never-Shown-7"
SUBJECT = {"common_name": "vpn.example.com", "organization": "Example Corp", "country": "US"}
#: Seconds in a SCEP retry minute here: a 1-minute retry period polls every 0.2 s.
MINUTE = 0.2


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> Iterator[RunningCa]:
    hosts = ["127.0.0.1", "::1"] if socket.has_ipv6 else ["127.0.0.1"]
    running = start_ca(tmp_path_factory.mktemp("scep-ca"), host=hosts, scep_port=0, scep_challenge=CHALLENGE)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    """Devices that wait at most 1 s for a CA holding a request, with SCEP minutes of 0.2 s."""
    with start_sim(SimConfig(devices=20, seed=8, ca_wait_seconds=1.0, scep_minute_seconds=MINUTE)) as s:
        yield s


class Device:
    """One simulated device, driven as the worker drives it."""

    def __init__(self, sim: RunningSim, serial: str) -> None:
        self.sim, self.serial = sim, serial
        self.http = httpx.Client(base_url=f"{sim.url}/api/devices/{serial}", timeout=30)

    def configure(self, name: str, url: str, *, key: tuple[str, int] = ("ecdsa", 256),
                  subject: dict | None = None, **options) -> None:
        body = {
            "name": name, "enrollment_type": "scep", "key_type": key[0], "key_size": key[1],
            "subject": subject or SUBJECT, "include_fqdn": True,
            "options": {"enrollment_url": url, "challenge": CHALLENGE, **options},
        }
        response = self.http.put(f"/trustpoints/{name}", json=body)
        assert response.status_code == 200, response.text
        assert CHALLENGE not in response.text

    def enroll(self, name: str, mode: str = "enroll") -> TrustpointState:
        response = self.http.post(f"/trustpoints/{name}/enroll", json={"mode": mode})
        assert response.status_code == 200, response.text
        assert CHALLENGE not in response.text and "PRIVATE KEY" not in response.text
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


def failed(state: TrustpointState, code: str, *, retryable: bool = False) -> str:
    assert state.identity_status == "failed", state
    assert (state.error_code, state.retryable) == (code, retryable), state.error_message
    assert CHALLENGE not in (state.error_message or "")
    return state.error_message or ""


def transaction(ca: RunningCa, label: str, key, *, renews: str | None = None):
    """What the CA recorded for the request made with ``key`` (the transactionID comes from it)."""
    return TransactionStore(transactions_db(ca.ca.paths)).find(label, transaction_id_for(key.public_key()),
                                                               renews=renews)


# --- enrolling ---------------------------------------------------------------------------------

URL_FORMS = {
    "no path: the default script": lambda ca: f"{ca.scep_url}/",
    "/scep": lambda ca: f"{ca.scep_url}/scep",
    "IPv6 literal": lambda ca: f"{ca.scep_urls[-1]}/cgi-bin/pkiclient.exe",
}


@pytest.mark.parametrize(("form", "key"), [
    ("no path: the default script", ("rsa", 2048)),
    ("/scep", ("ecdsa", 256)),
    ("IPv6 literal", ("ecdsa", 256)),
])
def test_enrollment_installs_the_ca_certificate_and_a_certificate_for_the_device_key(ca, sim, tmp_path, form,
                                                                                    key):
    if form == "IPv6 literal" and not ca.scep_urls[-1].startswith("http://[::1]:"):
        pytest.skip("no IPv6 loopback here")
    device = Device(sim, "FTD-000001")
    name = f"vpn-{list(URL_FORMS).index(form)}"
    device.configure(name, URL_FORMS[form](ca), key=key)
    state = device.enroll(name)

    assert (state.ca_status, state.identity_status, state.error_code) == ("available", "available", None)
    certs = certificates(state)
    assert set(certs) == {("identity", 0), ("ca", 0), ("ca", 1)}
    # GetCACert serves the issuing CA and its root (a certs-only SignedData); the chain is installed in order.
    assert (certs["ca", 0], certs["ca", 1]) == (ca.ca.issuing, ca.ca.root)
    identity = certs["identity", 0]
    openssl_verify(write_pem(tmp_path / "identity.pem", identity), root=ca.ca.paths.root_pem,
                   untrusted=write_pem(tmp_path / "issuing.pem", certs["ca", 0]))
    device_key = device.key_of(name)
    if key[0] == "rsa":
        assert isinstance(device_key, rsa.RSAPrivateKey) and device_key.key_size == 2048
    else:
        assert isinstance(device_key, ec.EllipticCurvePrivateKey) and device_key.curve.name == "secp256r1"
    assert spki(identity.public_key()) == spki(device_key.public_key())
    assert identity.subject.rfc4514_string() == "CN=vpn.example.com,O=Example Corp,C=US"
    san = identity.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ftd-000001.fleet.example"]


def test_re_enrollment_renews_with_a_new_key_over_renewal_req(ca, sim, tmp_path):
    device = Device(sim, "FTD-000002")
    device.configure("renew", f"{ca.scep_url}/", key=("rsa", 2048))
    first = certificates(device.enroll("renew"))["identity", 0]
    first_key = device.key_of("renew")
    assert certificates(device.enroll("renew"))["identity", 0] == first, "an enroll repeated changes nothing"

    # The challenge changed since: only a RenewalReq signed with the current certificate can work.
    device.configure("renew", f"{ca.scep_url}/", key=("rsa", 2048), challenge="no-longer-valid")
    state = device.enroll("renew", mode="re_enroll")

    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
    second = certificates(state)["identity", 0]
    new_key = device.key_of("renew")
    assert second.serial_number != first.serial_number and second.subject == first.subject
    assert spki(second.public_key()) == spki(new_key.public_key()) != spki(first_key.public_key())
    assert transaction(ca, "default", new_key, renews=format(first.serial_number, "x")) is not None
    openssl_verify(write_pem(tmp_path / "second.pem", second), root=ca.ca.paths.root_pem,
                   untrusted=write_pem(tmp_path / "issuing.pem", ca.ca.issuing))


def test_an_ecdsa_ca_behind_an_ra_installs_its_chain_and_not_the_ra(sim, tmp_path):
    """GetCACert answers RA, issuing CA and root: requests go to the RA, the trustpoint gets the CAs."""
    with start_ca(tmp_path / "ecdsa-ca", key_type="ecdsa", scep_port=0, scep_challenge=CHALLENGE) as ecdsa_ca:
        device = Device(sim, "FTD-000011")
        # The fingerprint may pin the root as well as the issuing CA.
        device.configure("behind-ra", f"{ecdsa_ca.scep_url}/scep", fingerprint=fingerprint(ecdsa_ca.ca.root))
        state = device.enroll("behind-ra")
        assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
        certs = certificates(state)
        assert (certs["ca", 0], certs["ca", 1]) == (ecdsa_ca.ca.issuing, ecdsa_ca.ca.root)
        assert set(certs) == {("identity", 0), ("ca", 0), ("ca", 1)}
        openssl_verify(write_pem(tmp_path / "id.pem", certs["identity", 0]), root=ecdsa_ca.ca.paths.root_pem,
                       untrusted=write_pem(tmp_path / "issuing.pem", ecdsa_ca.ca.issuing))


@pytest.mark.parametrize(("url", "shown", "host", "port", "path"), [
    ("http://ca.example.com", "http://ca.example.com/", "ca.example.com", 80, "/cgi-bin/pkiclient.exe"),
    ("http://user:pw@[2001:db8::5]:8080/certsrv/mscep/mscep.dll",
     "http://[2001:db8::5]:8080/certsrv/mscep/mscep.dll", "2001:db8::5", 8080, "/certsrv/mscep/mscep.dll"),
])
def test_where_an_enrollment_url_leads(url, shown, host, port, path):
    assert ScepEndpoint.parse(url) == ScepEndpoint(url=shown, host=host, port=port, path=path)


# --- CAs that answer as other implementations do ---------------------------------------------------

class ScepFront:
    """A CA front end on loopback that passes the device's requests on to the CA simulator and
    answers as another implementation would: GetCACert with ``ca_answer`` (body, content type),
    and each CertRep (signed by ``upstream_signer``) re-encoded in BER and signed again with
    ``reply_signer`` (key, certificate). It notes whom each request was encrypted to."""

    def __init__(self, upstream: str, *, upstream_signer: x509.Certificate,
                 ca_answer: tuple[bytes, str] | None = None, reply_signer: tuple | None = None,
                 indefinite: bool = True) -> None:
        self.upstream, self.upstream_signer = upstream, upstream_signer
        self.ca_answer, self.reply_signer, self.indefinite = ca_answer, reply_signer, indefinite
        #: Serial numbers of the certificates the device encrypted its requests to.
        self.recipients: list[int] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                front.answer(self, b"")

            def do_POST(self) -> None:
                front.answer(self, self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/scep"

    def answer(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if "operation=GetCACert" in handler.path and self.ca_answer is not None:
            return self._send(handler, 200, *self.ca_answer)
        if body:
            envelope = scep_cms.read_signed(body).content
            rid = asn1_cms.ContentInfo.load(envelope)["content"]["recipient_infos"][0].chosen["rid"]
            self.recipients.append(rid.chosen["serial_number"].native)
        with httpx.Client(timeout=10) as client:
            upstream = client.request(handler.command, f"{self.upstream}{handler.path}", content=body or None,
                                      headers={"Content-Type": scep.PKI_MESSAGE} if body else {})
        content = upstream.content
        if "operation=PKIOperation" in handler.path and upstream.status_code == 200 and self.reply_signer:
            key, cert = self.reply_signer
            content = ber_cert_rep(content, signer=self.upstream_signer, key=key, cert=cert, chunk=16,
                                   indefinite=self.indefinite)
        return self._send(handler, upstream.status_code, content, upstream.headers.get("Content-Type", ""))

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def __enter__(self) -> ScepFront:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def ra_certificate(ca: RunningCa, key: rsa.RSAPrivateKey, *, encipherment: bool, issuer=None,
                   issuer_key=None) -> x509.Certificate:
    """An RA certificate issued by the simulator's issuing CA (or ``issuer``): for signing only,
    or for encryption only."""
    issuer, issuer_key = issuer or ca.ca.issuing, issuer_key or ca.ca.issuing_key
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                    f"RA {'encryption' if encipherment else 'signing'}")]))
        .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now() - timedelta(minutes=5)).not_valid_after(now() + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=not encipherment, content_commitment=False, key_encipherment=encipherment,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False,
            decipher_only=False), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def ra_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.mark.parametrize("indefinite", [True, False], ids=["indefinite", "definite"])
def test_a_ca_answering_in_ber_enrolls_the_device(ca, sim, indefinite):
    """GetCACert and the CertRep in BER: the envelope's encryptedContent, eContent and the
    signed attributes' strings in constructed chunks, definite or indefinite lengths."""
    chain = to_ber(scep_cms.certs_only([ca.ca.issuing, ca.ca.root]), chunk=16, depth=ALL_LEVELS,
                   indefinite=indefinite)
    signer = (ca.ca.issuing_key, ca.ca.issuing)
    with ScepFront(ca.scep_url, upstream_signer=ca.ca.issuing, ca_answer=(chain, scep.CA_RA_CERT),
                   reply_signer=signer, indefinite=indefinite) as front:
        device = Device(sim, "FTD-000012")
        name = f"ber-{'indefinite' if indefinite else 'definite'}"
        device.configure(name, front.url)
        state = device.enroll(name)
    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
    certs = certificates(state)
    assert (certs["ca", 0], certs["ca", 1]) == (ca.ca.issuing, ca.ca.root)
    assert spki(certs["identity", 0].public_key()) == spki(device.key_of(name).public_key())
    assert front.recipients == [ca.ca.issuing.serial_number]


def test_a_ca_serving_its_certificate_alone_as_der(ca, sim):
    """RFC 8894's other GetCACert form: one DER certificate, application/x-x509-ca-cert."""
    single = (ca.ca.issuing.public_bytes(serialization.Encoding.DER), scep.CA_CERT)
    with ScepFront(ca.scep_url, upstream_signer=ca.ca.issuing, ca_answer=single) as front:
        device = Device(sim, "FTD-000012")
        device.configure("der-ca", front.url, fingerprint=fingerprint(ca.ca.issuing))
        state = device.enroll("der-ca")
    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
    assert certificates(state)["ca", 0] == ca.ca.issuing and ("ca", 1) not in certificates(state)
    assert front.recipients == [ca.ca.issuing.serial_number]


@pytest.mark.parametrize("scep_ra", [False, True], ids=["ca-encrypts", "ra-encrypts"])
def test_an_ra_with_a_signing_certificate_of_its_own(ca, sim, tmp_path, ra_key, scep_ra):
    """GetCACert serves an RA certificate for signing only (and, with the simulator's RA, one
    that may encrypt): the device encrypts to the RA's encryption certificate or else the
    issuing CA, and trusts answers signed by the RA's signing certificate."""
    own = start_ca(tmp_path / "ra-ca", scep_port=0, scep_challenge=CHALLENGE, scep_ra=True) if scep_ra \
        else contextlib.nullcontext(ca)
    with own as running:
        served = scep.decode_ca_certs(*_get_ca_cert(running.scep_url))
        upstream_ra = next((c for c in served if c not in (running.ca.issuing, running.ca.root)), None)
        assert (upstream_ra is not None) == scep_ra
        signing = ra_certificate(running, ra_key, encipherment=False)
        answer = scep_cms.certs_only([signing, *served]), scep.CA_RA_CERT
        with ScepFront(running.scep_url, upstream_signer=upstream_ra or running.ca.issuing, ca_answer=answer,
                       reply_signer=(ra_key, signing)) as front:
            device = Device(sim, "FTD-000013")
            name = f"ra-{scep_ra}"
            device.configure(name, front.url, fingerprint=fingerprint(running.ca.root))
            state = device.enroll(name)
        assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
        certs = certificates(state)
        assert set(certs) == {("identity", 0), ("ca", 0), ("ca", 1)}, "RA certificates are not installed"
        assert (certs["ca", 0], certs["ca", 1]) == (running.ca.issuing, running.ca.root)
        assert front.recipients == [(upstream_ra or running.ca.issuing).serial_number]


def _get_ca_cert(url: str) -> tuple[bytes, str]:
    response = httpx.get(f"{url}/scep?operation=GetCACert")
    return response.content, response.headers["Content-Type"]


def test_trust_comes_from_get_ca_cert_alone(ca, sim, ra_key):
    """An answer signed by a certificate GetCACert did not serve is refused, and so is an RA
    certificate that no CA of the chain issued."""
    stranger = scep.self_signed_signer(ra_key, x509.Name.from_rfc4514_string("CN=not the CA"), now=now())
    with ScepFront(ca.scep_url, upstream_signer=ca.ca.issuing, reply_signer=(ra_key, stranger)) as front:
        device = Device(sim, "FTD-000014")
        device.configure("stranger", front.url)
        message = failed(device.enroll("stranger"), "ca_bad_response")
    assert message.startswith(f"CA at {front.url} sent an unusable SCEP answer")
    assert "not signed by the expected certificate" in message

    other_ca = ra_certificate(ca, ra_key, encipherment=True, issuer=stranger, issuer_key=ra_key)
    answer = scep_cms.certs_only([other_ca, ca.ca.issuing, ca.ca.root]), scep.CA_RA_CERT
    with ScepFront(ca.scep_url, upstream_signer=ca.ca.issuing, ca_answer=answer) as front:
        device.configure("foreign-ra", front.url)
        state = device.enroll("foreign-ra")
    message = failed(state, "ca_bad_response")
    assert "with an RA certificate (CN=RA encryption) that none of its CA certificates issued" in message
    assert state.ca_status == "failed" and front.recipients == []


# --- the CA certificate's fingerprint ----------------------------------------------------------------

def test_the_fingerprint_of_the_ca_certificate_is_checked(ca, sim):
    device = Device(sim, "FTD-000003")
    colons = ":".join(fingerprint(ca.ca.issuing)[i:i + 2] for i in range(0, 64, 2)).upper()
    device.configure("pinned", f"{ca.scep_url}/", fingerprint=colons)
    assert device.enroll("pinned").identity_status == "available"
    # The root pins the chain as well: GetCACert serves it with the issuing CA.
    device.configure("pinned-root", f"{ca.scep_url}/", fingerprint=fingerprint(ca.ca.root))
    assert device.enroll("pinned-root").identity_status == "available"

    device.configure("pinned-wrong", f"{ca.scep_url}/", fingerprint="AB:" * 31 + "AB")
    state = device.enroll("pinned-wrong")
    message = failed(state, "ca_fingerprint_mismatch")
    assert message.startswith(f"CA at {ca.scep_url}/: the CA certificate it serves does not match the "
                              f"enrollment object's fingerprint {'ab' * 32} (it serves ")
    assert fingerprint(ca.ca.issuing) in message and fingerprint(ca.ca.root) in message
    assert "correct the enrollment object's fingerprint" in message
    # An untrusted CA certificate is not installed.
    assert state.ca_status == "failed" and state.certificates == []


# --- failures a person can act on ----------------------------------------------------------------

def test_a_wrong_challenge_password_is_refused_with_the_ca_certificate_installed(ca, sim):
    device = Device(sim, "FTD-000004")
    device.configure("badpass", f"{ca.scep_url}/", challenge="guess")
    state = device.enroll("badpass")
    message = failed(state, "ca_rejected")
    assert message.startswith(f"CA at {ca.scep_url}/ refused the PKCSReq: badRequest")
    assert "check the enrollment object's challenge password" in message and "guess" not in message
    assert state.ca_status == "available" and set(certificates(state)) == {("ca", 0), ("ca", 1)}

    device.configure("nopass", f"{ca.scep_url}/", challenge="")
    message = failed(device.enroll("nopass"), "ca_rejected")
    assert "carries no challenge password" in message


def test_connection_refused_is_worth_retrying(sim):
    url = f"http://127.0.0.1:{free_port()}/"
    device = Device(sim, "FTD-000005")
    device.configure("refused", url)
    message = failed(device.enroll("refused"), "ca_connection_refused", retryable=True)
    assert message.startswith(f"CA at {url} unreachable: connection refused; is its SCEP service listening")


def test_unresolvable_ca_name(sim):
    device = Device(sim, "FTD-000005")
    device.configure("dns", "http://no-such-ca.invalid/")
    message = failed(device.enroll("dns"), "ca_name_unresolved")
    assert message.startswith(
        "CA at http://no-such-ca.invalid/ unreachable: name no-such-ca.invalid not resolved")


def test_a_path_the_ca_does_not_serve_names_the_path(ca, sim):
    device = Device(sim, "FTD-000005")
    device.configure("badpath", f"{ca.scep_url}/certsrv/mscep/mscep.dll")
    message = failed(device.enroll("badpath"), "ca_http_error")
    assert message.startswith(f"CA at {ca.scep_url}/certsrv/mscep/mscep.dll answered GetCACert with 404")
    assert "check the enrollment URL's path" in message


class BusyCa(BaseHTTPRequestHandler):
    """A CA front end that is overloaded: 503 with Retry-After to every request."""

    def do_GET(self) -> None:
        body = b"busy, come back later"
        self.send_response(503)
        self.send_header("Retry-After", "30")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_busy_ca_s_retry_after_is_passed_on_to_the_controller(sim):
    server = ThreadingHTTPServer(("127.0.0.1", 0), BusyCa)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        device = Device(sim, "FTD-000006")
        device.configure("busy", f"http://127.0.0.1:{server.server_address[1]}/")
        state = device.enroll("busy")
    finally:
        server.shutdown()
        server.server_close()
    message = failed(state, "ca_http_error", retryable=True)
    assert "answered GetCACaps with 503" in message and "busy, come back later" in message
    # What the worker takes as the floor of its retry delay.
    assert state.retry_after == 30


@pytest.mark.parametrize("url", ["https://127.0.0.1/", "http://[::1/", "ftp://ca.example.com/"])
def test_an_unusable_enrollment_url_is_refused_with_a_code(sim, url):
    device = Device(sim, "FTD-000006")
    device.configure("badurl", url)
    state = device.enroll("badurl")
    assert "http://" in failed(state, "invalid_enrollment_url")
    assert state.ca_status == "failed"


def test_a_retry_period_out_of_range_is_refused(ca, sim):
    device = Device(sim, "FTD-000006")
    device.configure("badretry", f"{ca.scep_url}/", retry_period_minutes=0)
    message = failed(device.enroll("badretry"), "invalid_scep_configuration")
    assert "retry period must be 1 to 60 minutes" in message


# --- weak crypto -------------------------------------------------------------------------------------

def test_a_legacy_3des_sha1_ca_is_refused_until_weak_crypto_is_enabled_on_the_device(ca, sim):
    device = Device(sim, "FTD-000007")
    device.configure("legacy", f"{ca.scep_url}/legacy-des/scep")
    state = device.enroll("legacy")
    message = failed(state, "weak_crypto")
    assert message.startswith("weak crypto: 3DES-CBC and SHA-1 (the SCEP CA at ")
    assert message.endswith("enable weak-crypto on the device to accept it")
    assert state.ca_status == "available"  # the CA certificate itself is fine

    # The operator enables weak-crypto on the device (the device API's PUT weak-crypto), then retries.
    answer = device.http.put("/weak-crypto", json={"enabled": True})
    assert answer.status_code == 200 and answer.json()["weak_crypto"] is True
    state = device.enroll("legacy")
    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
    assert spki(certificates(state)["identity", 0].public_key()) == spki(device.key_of("legacy").public_key())

    # As the worker does it: the trustpoint configuration carries the device's weak-crypto setting.
    other = Device(sim, "FTD-000008")
    other.configure("legacy", f"{ca.scep_url}/scep/legacy-des", weak_crypto=True)
    assert other.enroll("legacy").identity_status == "available"


# --- a request the CA holds for approval -------------------------------------------------------------

def held_requests(ca: RunningCa, common_name: str) -> list:
    subject = f"CN={common_name},O=Example Corp,C=US"
    return [r for r in list_requests(ca.state_dir, status=None) if r.subject == subject]


def wait_while_pending(device: Device, name: str, timeout: float = 10) -> TrustpointState:
    deadline = time.monotonic() + timeout
    while (state := device.get(name)).identity_status == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
    return state


def test_a_held_request_stays_pending_until_approved_then_the_device_installs_it(ca, sim):
    device = Device(sim, "FTD-000009")
    subject = {**SUBJECT, "common_name": "held.example.com"}
    device.configure("held", f"{ca.scep_url}/ms2012-manual/scep", subject=subject, retry_count=100)

    state = device.enroll("held")
    assert (state.ca_status, state.identity_status) == ("available", "pending")
    assert set(certificates(state)) == {("ca", 0), ("ca", 1)}
    # A repeated enrollment (a redelivered job) polls the same request, it files no second one.
    assert device.enroll("held").identity_status == "pending"
    (request,) = held_requests(ca, "held.example.com")
    assert request.status == "pending"

    approve(ca.state_dir, request.id)
    # The device keeps polling in the background every retry period (1 "minute" = 0.2 s here).
    state = wait_while_pending(device, "held")
    assert (state.ca_status, state.identity_status) == ("available", "available")
    identity = certificates(state)["identity", 0]
    assert spki(identity.public_key()) == spki(device.key_of("held").public_key())
    assert identity.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "held.example.com"
    assert [r.status for r in held_requests(ca, "held.example.com")] == ["issued"]


def test_once_the_retry_count_is_spent_the_device_asks_again_only_when_told(ca, sim):
    device = Device(sim, "FTD-000010")
    subject = {**SUBJECT, "common_name": "patient.example.com"}
    device.configure("patient", f"{ca.scep_url}/ms2012-manual/scep", subject=subject, retry_count=2)
    assert device.enroll("patient").identity_status == "pending"  # polled twice within the 1 s wait
    (request,) = held_requests(ca, "patient.example.com")
    approve(ca.state_dir, request.id)
    wait_until(lambda: not sim.sim.following("FTD-000010", "patient"), what="the device to stop asking")
    assert device.get("patient").identity_status == "pending", "no retries left: the device stopped asking"

    state = device.enroll("patient")  # the operator enrolls again: the same request is polled
    assert (state.ca_status, state.identity_status) == ("available", "available"), state.error_message
    assert len(held_requests(ca, "patient.example.com")) == 1
