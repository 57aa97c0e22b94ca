"""The CA simulator's SCEP server against real clients: strongSwan's ``pki --scepca/--scep``
(the CA chain from GetCACert, enroll with the challenge password, renew with the certificate,
poll a pending request until an operator approves it, an RA in front of an ECDSA or RSA CA),
and the project's own codec over httpx for what pki cannot send (GET, BER, legacy DES/SHA-1,
replays, fuzz). openssl and pkilint check
what comes back. One CA per module, served on free ports."""

from __future__ import annotations

import base64
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.ca_sim.pending import list_requests
from services.ca_sim.service import start_in_thread
from shared.protocols import scep
from shared.protocols.scep import ContentCipher, FailInfo, PkiStatus
from tests.support.ca_peers import lint, openssl_verify, pki, run, spki
from tests.support.scep_peers import ber_pkcs_req, csr_for, now, rsa_key, to_ber
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]
CHALLENGE = "Scep-Static-Challenge-9"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    running = start_in_thread(tmp_path_factory.mktemp("ca-scep"), scep_port=0, scep_challenge=CHALLENGE)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(ca):
    with httpx.Client(base_url=ca.scep_url, timeout=10) as client:
        yield client


def scepca(url: str, out: Path, *, ra: bool = False) -> tuple[dict[Path, x509.Certificate], bytes]:
    """``pki --scepca``: the certificates it wrote (ca.pem, ca-1.pem, ... in the answer's order;
    ra.pem) and what it said."""
    done = run([pki(), "--scepca", "--url", url, "--caout", str(out / "ca.pem"), "--outform", "pem",
                *(["--raout", str(out / "ra.pem")] if ra else [])])
    written = {f: x509.load_pem_x509_certificate(f.read_bytes()) for f in sorted(out.glob("*.pem"))}
    return written, done.stderr


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory) -> Path:
    """The issuing CA (a sub CA) as ``pki --scepca`` fetched it, trusted through the root that
    came in the same answer."""
    written, said = scepca(f"{ca.scep_url}/scep", tmp_path_factory.mktemp("scepca"))
    assert sorted(written.values(), key=lambda c: c != ca.ca.issuing) == [ca.ca.issuing, ca.ca.root]
    assert b'Sub CA cert "C=US, O=certfleet CA simulator, CN=certfleet Issuing CA"' in said
    assert b"Sub CA cert is trusted" in said and b'Root CA cert "C=US, O=certfleet CA simulator' in said
    return next(f for f, cert in written.items() if cert == ca.ca.issuing)


def certs_only_answer(response: httpx.Response) -> set[x509.Certificate]:
    """A GetCACert answer checked as RFC 8894 4.2.1.2 has it: a degenerate SignedData (no
    content, no signer) with the certificates; openssl reads the same set."""
    assert response.status_code == 200 and response.headers["Content-Type"] == scep.CA_RA_CERT
    info = asn1_cms.ContentInfo.load(response.content, strict=True)
    assert info["content_type"].native == "signed_data"
    assert len(info["content"]["signer_infos"]) == 0 and info["content"]["encap_content_info"]["content"].native \
        is None
    certs = {x509.load_der_x509_certificate(c.chosen.dump()) for c in info["content"]["certificates"]}
    printed = run(["openssl", "pkcs7", "-inform", "DER", "-print_certs"], input=response.content).stdout
    assert set(x509.load_pem_x509_certificates(printed)) == certs
    return certs


@pytest.fixture(scope="module")
def keys():
    """RSA requesters, made once: SCEP's key transport needs RSA-2048."""
    return [rsa_key() for _ in range(3)]


def pki_rsa_key(path: Path) -> Path:
    path.write_bytes(run([pki(), "--gen", "--type", "rsa", "--size", "2048", "--outform", "pem"]).stdout)
    return path


def pki_scep(url: str, key: Path, dn: str, *more: str, enc: Path, sig: Path | None = None, check: bool = True,
             out: Path | None = None) -> subprocess.CompletedProcess:
    done = run([pki(), "--scep", "--url", url, "--in", str(key), "--dn", dn, "--cacert-enc", str(enc),
                "--cacert-sig", str(sig or enc), "--outform", "pem", *more], check=check)
    if out is not None:
        out.write_bytes(done.stdout)
    return done


def assert_issued_for(cert_file: Path, key_file: Path, dn: str, state_dir: Path) -> x509.Certificate:
    """What strongSwan does not check: the certificate is for our key and our subject, chains
    to the root with openssl and lints clean with pkilint."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert spki(cert.public_key()) == spki(key.public_key())
    assert cert.subject.rfc4514_string() == ",".join(reversed(dn.split(", ")))
    openssl_verify(cert_file, root=state_dir / "ca" / "root.pem", untrusted=state_dir / "ca" / "issuing.pem")
    assert lint(cert_file) == ""
    return cert


# --- strongSwan's pki -------------------------------------------------------------------------

def test_get_ca_cert_answers_the_issuing_ca_and_its_root_in_a_certs_only_signed_data(ca, ca_file, http):
    """The issuing CA is an intermediate: a client needs the root too to build the chain."""
    for path in ("/cgi-bin/pkiclient.exe?operation=GetCACert", "/scep?operation=GetCACert&message=certfleet",
                 "/legacy-des/scep?operation=GetCACert"):
        assert certs_only_answer(http.get(path)) == {ca.ca.issuing, ca.ca.root}


def test_pki_enrolls_with_the_challenge_then_renews_with_its_certificate(ca, ca_file, tmp_path):
    url, dn = f"{ca.scep_url}/scep", "C=US, O=certfleet, CN=fw-scep.example.net"
    root = str(ca.state_dir / "ca" / "root.pem")
    key = pki_rsa_key(tmp_path / "first.key")
    done = pki_scep(url, key, dn, "--password", CHALLENGE, "--cacert", root, enc=ca_file, out=tmp_path / "first.pem")
    assert b"Issued certificate is trusted" in done.stderr
    first = assert_issued_for(tmp_path / "first.pem", key, dn, ca.state_dir)

    # RenewalReq: a new key, signed with the current certificate and its key; no password.
    new_key = pki_rsa_key(tmp_path / "second.key")
    pki_scep(url, new_key, dn, "--cert", str(tmp_path / "first.pem"), "--key", str(key), "--cacert", root,
             enc=ca_file, out=tmp_path / "second.pem")
    second = assert_issued_for(tmp_path / "second.pem", new_key, dn, ca.state_dir)
    assert second.serial_number != first.serial_number


def test_pki_gets_the_same_certificate_for_the_same_transaction(ca, ca_file, tmp_path):
    """pki derives the transactionID from the key: asking twice is one transaction."""
    url, dn = f"{ca.scep_url}/cgi-bin/pkiclient.exe", "CN=fw-twice.example.net"
    key = pki_rsa_key(tmp_path / "k.pem")
    pki_scep(url, key, dn, "--password", CHALLENGE, enc=ca_file, out=tmp_path / "one.pem")
    pki_scep(url, key, dn, "--password", CHALLENGE, enc=ca_file, out=tmp_path / "two.pem")
    assert (tmp_path / "one.pem").read_bytes() == (tmp_path / "two.pem").read_bytes()


def test_pki_without_or_with_a_wrong_password_gets_bad_request(ca, ca_file, tmp_path):
    key = pki_rsa_key(tmp_path / "k.pem")
    for extra in ([], ["--password", "guess"]):
        done = pki_scep(f"{ca.scep_url}/scep", key, "CN=fw-anon.example.net", *extra, enc=ca_file, check=False)
        assert done.returncode != 0 and b"failInfo:     badRequest" in done.stderr


def ca_challenge(state_dir: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "services.ca_sim", "challenge", "--state-dir",
                           str(state_dir)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"[0-9a-f]{32}\n", done.stdout)
    return done.stdout.strip()


def test_a_one_time_challenge_works_once(ca, ca_file, tmp_path):
    password = ca_challenge(ca.state_dir)
    url = f"{ca.scep_url}/scep"
    key = pki_rsa_key(tmp_path / "a.key")
    pki_scep(url, key, "CN=fw-otp-a.example.net", "--password", password, enc=ca_file, out=tmp_path / "a.pem")
    assert_issued_for(tmp_path / "a.pem", key, "CN=fw-otp-a.example.net", ca.state_dir)
    other = pki_rsa_key(tmp_path / "b.key")
    done = pki_scep(url, other, "CN=fw-otp-b.example.net", "--password", password, enc=ca_file, check=False)
    assert done.returncode != 0 and b"badRequest" in done.stderr


def test_pki_polls_a_pending_request_until_the_operator_approves_it(ca, ca_file, tmp_path):
    dn = "C=US, O=certfleet, CN=fw-manual.example.net"
    key = pki_rsa_key(tmp_path / "manual.key")
    with (tmp_path / "pki.log").open("wb") as log, (tmp_path / "manual.pem").open("wb") as out:
        client = subprocess.Popen(
            [pki(), "--scep", "--url", f"{ca.scep_url}/ms2012-manual/scep", "--in", str(key), "--dn", dn,
             "--password", CHALLENGE, "--cacert-enc", str(ca_file), "--cacert-sig", str(ca_file),
             "--interval", "1", "--maxpolltime", "30", "--outform", "pem"],
            stdout=out, stderr=log,
        )
        try:
            request = _wait_for_pending(ca, "CN=fw-manual.example.net,O=certfleet,C=US")
            # pki asks about the request again after its interval, hears "pending" again, and keeps waiting.
            wait_until(lambda: (tmp_path / "pki.log").read_bytes().count(b"going to sleep for 1 seconds") >= 2,
                       what="pki asking about the pending request a second time")
            assert client.poll() is None, "pki gave up while the request was pending"
            approved = subprocess.run(
                [sys.executable, "-m", "services.ca_sim", "approve", "--state-dir", str(ca.state_dir),
                 request.id], cwd=ROOT, capture_output=True, text=True, timeout=30,
            )
            assert approved.returncode == 0, approved.stderr
            assert client.wait(timeout=20) == 0
        finally:
            if client.poll() is None:
                client.kill()
    assert b"SCEP request pending, polling every 1 seconds" in (tmp_path / "pki.log").read_bytes()
    assert_issued_for(tmp_path / "manual.pem", key, dn, ca.state_dir)
    assert all(r.id != request.id for r in list_requests(ca.state_dir))


def _wait_for_pending(ca, subject: str, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for request in list_requests(ca.state_dir):
            if request.subject == subject:
                return request
        time.sleep(0.1)
    raise AssertionError(f"no pending request for {subject}")


@pytest.mark.parametrize(("key_type", "scep_ra"), [("ecdsa", False), ("rsa", True)])
def test_an_ra_speaks_scep_for_an_ecdsa_ca_or_when_asked_to(tmp_path, key_type, scep_ra):
    """An ECDSA CA cannot do SCEP's RSA key transport, so an RA does; an RSA CA uses one with
    --scep-ra. GetCACert adds the RA to the chain; pki encrypts to it and trusts its answers."""
    state = tmp_path / "ca"
    with start_in_thread(state, key_type=key_type, scep_port=0, scep_challenge=CHALLENGE,
                         scep_ra=scep_ra) as running:
        url = f"{running.scep_url}/scep"
        ra = x509.load_pem_x509_certificate((state / "ca" / "scep-ra.pem").read_bytes())
        assert certs_only_answer(httpx.get(f"{url}?operation=GetCACert")) == {ra, running.ca.issuing,
                                                                            running.ca.root}
        out = tmp_path / "scepca"
        out.mkdir()
        written, said = scepca(url, out, ra=True)
        assert b"RA cert is trusted" in said and b"Sub CA cert is trusted" in said
        assert written[out / "ra.pem"] == ra
        assert {c for f, c in written.items() if f.name != "ra.pem"} == {running.ca.issuing, running.ca.root}
        cacerts = [arg for f in written if f.name != "ra.pem" for arg in ("--cacert", str(f))]
        key = pki_rsa_key(tmp_path / "k.pem")
        pki_scep(url, key, "CN=fw-ra.example.net", "--password", CHALLENGE, *cacerts, enc=out / "ra.pem",
                 out=tmp_path / "c.pem")
        assert_issued_for(tmp_path / "c.pem", key, "CN=fw-ra.example.net", state)


# --- the project's codec as client ------------------------------------------------------------

class Device:
    """A SCEP requester built on the codec, talking to the server over httpx."""

    def __init__(self, ca_cert: x509.Certificate, http: httpx.Client, key, *, label: str = "",
                 cipher=ContentCipher.AES128, digest: str = "sha256") -> None:
        self.http, self.key = http, key
        self.path = f"/{label}/scep" if label else "/scep"
        signer = scep.self_signed_signer(key, x509.Name.from_rfc4514_string("CN=device"), now=now())
        self.requester = scep.Requester(key=key, cert=signer, recipient=ca_cert, cipher=cipher, digest=digest)

    def pkcs_req(self, csr, *, transaction_id: str | None = None, nonce: bytes | None = None, when=None) -> bytes:
        return scep.build_pkcs_req(self.requester, csr, sender_nonce=nonce or scep.new_nonce(), now=when or now(),
                                   transaction_id=transaction_id or scep.transaction_id_for(csr.public_key()))

    def post(self, message: bytes, content_type: str | None = scep.PKI_MESSAGE) -> httpx.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return self.http.post(f"{self.path}?operation=PKIOperation", content=message, headers=headers)

    def answer(self, response: httpx.Response) -> scep.CertRep:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == scep.PKI_MESSAGE
        return scep.parse_cert_rep(response.content, self.requester)


@pytest.fixture
def device(ca, http, keys):
    return Device(ca.ca.issuing, http, keys[0])


def test_post_with_any_content_type_and_get_with_a_url_encoded_message(ca, http, keys):
    device = Device(ca.ca.issuing, http, keys[1])
    csr = csr_for(keys[1], "fw-http.example.net", challenge=CHALLENGE)
    certs = set()
    for content_type in (None, "application/octet-stream", scep.PKI_MESSAGE):
        rep = device.answer(device.post(device.pkcs_req(csr), content_type))
        assert rep.status is PkiStatus.SUCCESS
        certs |= set(rep.certs)
    message = base64.b64encode(device.pkcs_req(csr)).decode()
    assert "+" in message or "/" in message
    lines = "\n".join(message[i:i + 64] for i in range(0, len(message), 64))
    for encoded in (quote(message, safe=""), quote(message, safe="+/"), quote(lines, safe="")):
        rep = device.answer(http.get(f"/cgi-bin/pkiclient.exe?operation=PKIOperation&message={encoded}"))
        assert rep.status is PkiStatus.SUCCESS
        certs |= set(rep.certs)
    assert len(certs) == 1, "one transaction, one certificate"
    (cert,) = certs
    assert spki(cert.public_key()) == spki(keys[1].public_key()) and cert.subject == csr.subject


@pytest.mark.parametrize(("indefinite", "chunk"), [(True, 7), (False, 7), (True, 1), (False, 100)])
def test_a_pkcs_req_in_ber_with_strings_in_chunks_is_enrolled(ca, http, keys, indefinite, chunk):
    """As Bouncy Castle or a streaming OpenSSL send it: encryptedContent, eContent and the signed
    attributes' strings in constructed chunks, with definite or indefinite lengths."""
    device = Device(ca.ca.issuing, http, keys[1])
    csr = csr_for(keys[1], f"fw-ber-{int(indefinite)}-{chunk}.example.net", challenge=CHALLENGE)
    transaction_id, nonce = f"ber-{int(indefinite)}-{chunk}-0123456789", scep.new_nonce()
    message = ber_pkcs_req(device.requester, csr, transaction_id=transaction_id, sender_nonce=nonce, chunk=chunk,
                           indefinite=indefinite)
    rep = scep.parse_cert_rep(device.post(message).content, device.requester, transaction_id=transaction_id,
                              sender_nonce=nonce)
    assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text
    (cert,) = rep.certs
    assert spki(cert.public_key()) == spki(keys[1].public_key()) and cert.subject == csr.subject


def test_capabilities_by_profile(http):
    modern = scep.parse_caps(http.get("/scep?operation=GetCACaps").text)
    assert modern == {"POSTPKIOperation", "Renewal", "SHA-256", "SHA-384", "SHA-512", "AES", "SCEPStandard"}
    assert scep.parse_caps(http.get("/scep?operation=GetCACaps&message=x").text) == modern
    legacy = http.get("/legacy-des/cgi-bin/pkiclient.exe?operation=GetCACaps")
    assert legacy.headers["Content-Type"].startswith("text/plain")
    assert scep.parse_caps(legacy.text) == {"DES3", "SHA-1", "Renewal"}
    assert scep.preferred_algorithms(scep.parse_caps(legacy.text)) == (ContentCipher.DES3, "sha1")
    assert http.get("/scep/legacy-des?operation=GetCACaps").text == legacy.text


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/scep", 400, "unknown_operation"),
    ("/scep?operation=Enroll", 400, "unknown_operation"),
    ("/no-such-ca/scep?operation=GetCACaps", 404, "unknown_profile"),
    ("/scep?operation=GetNextCACert", 404, "no_next_ca"),
    ("/est?operation=GetCACaps", 404, "not_found"),
    ("/scep?operation=PKIOperation", 400, "bad_request"),
    ("/scep?operation=PKIOperation&message=%%%", 400, "bad_request"),
])
def test_http_errors_are_problems_with_a_code(http, path, status, code):
    response = http.get(path)
    assert response.status_code == status and response.json()["code"] == code and response.json()["detail"]


@pytest.mark.parametrize(("cipher", "digest"), [(ContentCipher.DES, "sha1"), (ContentCipher.DES3, "sha1")])
def test_the_legacy_profile_enrolls_with_des_and_sha1(ca, http, keys, cipher, digest):
    device = Device(ca.ca.issuing, http, keys[2], label="legacy-des", cipher=cipher, digest=digest)
    csr = csr_for(keys[2], f"fw-legacy-{cipher.value}.example.net", challenge=CHALLENGE)
    response = device.post(device.pkcs_req(csr, transaction_id=f"{cipher.value}-1"), content_type=None)
    rep = device.answer(response)
    assert rep.status is PkiStatus.SUCCESS and rep.digest == "sha1"
    assert rep.certs[0].subject == csr.subject


@pytest.mark.parametrize(("label", "cipher", "digest", "refused"), [
    ("legacy-des", ContentCipher.AES128, "sha1", "content encryption aes128"),
    ("legacy-des", ContentCipher.DES3, "sha256", "digest sha256"),
    ("", ContentCipher.DES3, "sha256", "content encryption des3"),
    ("", ContentCipher.AES128, "sha1", "digest sha1"),
])
def test_algorithms_a_profile_does_not_speak_are_bad_alg(ca, http, keys, label, cipher, digest, refused):
    device = Device(ca.ca.issuing, http, keys[2], label=label, cipher=cipher, digest=digest)
    rep = device.answer(device.post(device.pkcs_req(csr_for(keys[2], "fw-alg", challenge=CHALLENGE))))
    assert (rep.status, rep.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_ALG)
    assert refused in rep.fail_info_text


def test_replays_same_message_same_answer_reused_nonce_refused(device, keys):
    csr = csr_for(keys[0], "fw-replay.example.net", challenge=CHALLENGE)
    nonce = scep.new_nonce()
    message = device.pkcs_req(csr, nonce=nonce)
    first = device.answer(device.post(message))
    again = device.answer(device.post(message))
    assert first.status is again.status is PkiStatus.SUCCESS and first.certs == again.certs
    assert again.recipient_nonce == nonce
    # The same nonce on another request: a replay.
    other = device.pkcs_req(csr_for(keys[0], "fw-replay-2.example.net", challenge=CHALLENGE),
                            transaction_id="77", nonce=nonce)
    rep = device.answer(device.post(other))
    assert (rep.status, rep.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert "senderNonce" in rep.fail_info_text
    # The same transactionID with another key: refused, not a second certificate.
    stolen = device.pkcs_req(csr_for(keys[1], "fw-replay.example.net", challenge=CHALLENGE),
                             transaction_id=scep.transaction_id_for(keys[0].public_key()))
    rep = device.answer(device.post(stolen))
    assert rep.fail_info is FailInfo.BAD_REQUEST and "another key" in rep.fail_info_text


def test_a_message_signed_far_from_the_cas_time_is_bad_time(device, keys):
    csr = csr_for(keys[0], "fw-clock.example.net", challenge=CHALLENGE)
    rep = device.answer(device.post(device.pkcs_req(csr, transaction_id="clock-1", when=now() - timedelta(days=2))))
    assert (rep.status, rep.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_TIME)


def test_polls_get_cert_and_get_crl(ca, device, keys):
    requester = device.requester
    common = lambda: dict(sender_nonce=scep.new_nonce(), now=now())  # noqa: E731
    unknown = scep.build_cert_poll(requester, issuer=ca.ca.issuing.subject, subject=x509.Name.from_rfc4514_string(
        "CN=nobody"), transaction_id="no-such-transaction", **common())
    assert device.answer(device.post(unknown)).fail_info is FailInfo.BAD_CERT_ID

    csr = csr_for(keys[0], "fw-getcert.example.net", challenge=CHALLENGE)
    (issued,) = device.answer(device.post(device.pkcs_req(csr, transaction_id="getcert-1"))).certs
    poll = scep.build_cert_poll(requester, issuer=ca.ca.issuing.subject, subject=csr.subject,
                                transaction_id="getcert-1", **common())
    assert device.answer(device.post(poll)).certs == (issued,)
    get_cert = scep.build_get_cert(requester, issuer=ca.ca.issuing.subject, serial=issued.serial_number,
                                   transaction_id="getcert-2", **common())
    assert device.answer(device.post(get_cert)).certs == (issued,)
    missing = scep.build_get_cert(requester, issuer=ca.ca.issuing.subject, serial=12345,
                                  transaction_id="getcert-3", **common())
    assert device.answer(device.post(missing)).fail_info is FailInfo.BAD_CERT_ID
    foreign = scep.build_get_cert(requester, issuer=ca.ca.root.subject, serial=issued.serial_number,
                                  transaction_id="getcert-4", **common())
    assert device.answer(device.post(foreign)).fail_info is FailInfo.BAD_CERT_ID

    get_crl = scep.build_get_crl(requester, issuer=ca.ca.issuing.subject, serial=issued.serial_number,
                                 transaction_id="crl-1", **common())
    rep = device.answer(device.post(get_crl))
    assert rep.status is PkiStatus.SUCCESS and rep.crl is not None
    assert rep.crl.is_signature_valid(ca.ca.issuing.public_key()) and len(rep.crl) == 0
    assert rep.crl.next_update_utc > now()


def test_renewal_needs_a_certificate_of_this_ca_and_the_same_subject(ca, http, keys, tmp_path):
    device = Device(ca.ca.issuing, http, keys[1])
    own = device.answer(device.post(device.pkcs_req(
        csr_for(keys[1], "fw-renew.example.net", challenge=CHALLENGE), transaction_id="renew-0"))).certs[0]
    renewing = scep.Requester(key=keys[1], cert=own, recipient=ca.ca.issuing)
    for csr, expected in ((csr_for(keys[2], "someone-else.example.net"), "keep the subject"),
                          (csr_for(keys[2], "fw-renew.example.net"), None)):
        message = scep.build_renewal_req(renewing, csr, transaction_id=scep.transaction_id_for(keys[2].public_key()),
                                         sender_nonce=scep.new_nonce(), now=now())
        rep = scep.parse_cert_rep(http.post("/scep?operation=PKIOperation", content=message).content, renewing)
        if expected:
            assert rep.fail_info is FailInfo.BAD_REQUEST and expected in rep.fail_info_text
        else:
            assert rep.status is PkiStatus.SUCCESS and spki(rep.certs[0].public_key()) == spki(keys[2].public_key())
    # A self-signed certificate is not one this CA issued.
    stranger = scep.Requester(key=keys[1], cert=device.requester.cert, recipient=ca.ca.issuing)
    message = scep.build_renewal_req(stranger, csr_for(keys[2], "device"), transaction_id="renew-9",
                                     sender_nonce=scep.new_nonce(), now=now())
    rep = scep.parse_cert_rep(http.post("/scep?operation=PKIOperation", content=message).content, stranger)
    assert rep.fail_info is FailInfo.BAD_REQUEST and "not issued by this CA" in rep.fail_info_text


def test_a_renewal_cannot_add_names_the_renewed_certificate_does_not_hold(ca, http, keys):
    """The attack: a device holding a certificate for its own name signs a RenewalReq for the
    same subject but another host's subjectAltName. The certificate vouches for its own names
    only: the renewal is refused (badRequest, saying which names); keeping them is issued."""
    device = Device(ca.ca.issuing, http, keys[1])
    own = device.answer(device.post(device.pkcs_req(
        csr_for(keys[1], "fw-sans.example.net", challenge=CHALLENGE, sans=["fw-sans.example.net"]),
        transaction_id="sans-0"))).certs[0]
    renewing = scep.Requester(key=keys[1], cert=own, recipient=ca.ca.issuing)

    def renew(csr, transaction_id: str) -> scep.CertRep:
        message = scep.build_renewal_req(renewing, csr, transaction_id=transaction_id,
                                         sender_nonce=scep.new_nonce(), now=now())
        return scep.parse_cert_rep(http.post("/scep?operation=PKIOperation", content=message).content, renewing)

    for i, sans in enumerate((["bank.example.com"], ["fw-sans.example.net", "bank.example.com"])):
        rep = renew(csr_for(keys[2], "fw-sans.example.net", sans=sans), f"sans-attack-{i}")
        assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST and not rep.certs
        assert "bank.example.com" in rep.fail_info_text and "keep the subjectAltNames" in rep.fail_info_text
    rep = renew(csr_for(keys[2], "fw-sans.example.net", sans=["fw-sans.example.net"]), "sans-kept")
    assert rep.status is PkiStatus.SUCCESS
    renewed = rep.certs[0]
    assert renewed.subject == own.subject and spki(renewed.public_key()) == spki(keys[2].public_key())
    assert renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == \
        own.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


FUZZ_SEED = 8894


def test_fuzzed_pki_operations_get_a_failure_or_a_400_never_a_500(ca, device, keys):
    """Random bytes, truncations, bit flips and BER variants of a valid message: each gets a
    CertRep (FAILURE with a failInfo, or SUCCESS for what is still valid) or a 400 problem; the
    server stays up."""
    valid = device.pkcs_req(csr_for(keys[0], "fw-fuzz.example.net", challenge=CHALLENGE), transaction_id="fuzz-1")
    rng = random.Random(FUZZ_SEED)
    variants = [os.urandom(rng.randrange(1, 300)) for _ in range(15)]
    variants += [valid[:n] for n in range(1, len(valid), len(valid) // 25)]
    for _ in range(60):
        flipped = bytearray(valid)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        variants.append(bytes(flipped))
    variants += [to_ber(valid, chunk=5), b"\x30\x80", b"\x30\x84\x7f\xff\xff\xff" + b"\x00" * 16]
    seen = {"certrep": 0, "400": 0}
    for message in variants:
        response = device.post(message, content_type=rng.choice([None, scep.PKI_MESSAGE]))
        assert response.status_code in (200, 400), (response.status_code, response.text)
        if response.status_code == 200:
            rep = device.answer(response)
            assert rep.status is PkiStatus.SUCCESS or rep.fail_info is not None
            seen["certrep"] += 1
        else:
            assert response.json()["code"] in {f.code for f in FailInfo}
            seen["400"] += 1
    assert seen["certrep"] > 10 and seen["400"] > 10, seen
    assert device.http.get("/scep?operation=GetCACaps").status_code == 200


# --- the command line -------------------------------------------------------------------------

def test_serve_announces_scep_and_never_logs_the_challenge(tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, "CERTFLEET_CA_SCEP_CHALLENGE": CHALLENGE, "CERTFLEET_LOG_FORMAT": "json"}
    with (tmp_path / "out").open("w+") as out, (tmp_path / "err").open("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "services.ca_sim", "serve", "--state-dir", str(state),
                                 "--est-port", "0", "--scep-port", "0"], cwd=ROOT, env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (tmp_path / "out").read_text():
                assert proc.poll() is None, (tmp_path / "err").read_text()
                time.sleep(0.05)
            ready = (tmp_path / "out").read_text().splitlines()[0]
            match = re.fullmatch(r"ca ready: est=https://127\.0\.0\.1:\d+ scep=(http://127\.0\.0\.1:\d+) state=\S+",
                                 ready)
            assert match, ready
            key = rsa_key()
            issuing = x509.load_pem_x509_certificate((state / "ca" / "issuing.pem").read_bytes())
            device = Device(issuing, httpx.Client(base_url=match[1], timeout=10), key)
            csr = csr_for(key, "fw-cli.example.net", challenge=CHALLENGE)
            assert device.answer(device.post(device.pkcs_req(csr))).status is PkiStatus.SUCCESS
            wrong = csr_for(key, "fw-cli.example.net", challenge="wrong")
            assert device.answer(device.post(device.pkcs_req(wrong, transaction_id="cli-2"))).fail_info \
                is FailInfo.BAD_REQUEST
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        logs = (tmp_path / "err").read_text()
    assert "scep request answered" in logs and "scep request refused" in logs
    assert CHALLENGE not in logs and CHALLENGE not in ready


def test_challenge_command_needs_a_ca(tmp_path):
    done = subprocess.run([sys.executable, "-m", "services.ca_sim", "challenge", "--state-dir",
                           str(tmp_path / "none")], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "holds no CA" in done.stderr

