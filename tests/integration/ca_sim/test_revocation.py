"""The CA simulator's CRL and OCSP responder (``--http-port``) against real clients: openssl's
``ocsp`` (good, revoked with reason, unknown; nonces; delegated and CA-signed answers verified
with -VAfile and -CAfile) and ``crl -verify``, pkilint's CRL and OCSP linters; GET and POST,
malformed and oversized requests; IPv6; ``certfleet ca revoke`` and ``revocations``; the
profile that revokes what a re-enrollment with a new key supersedes. One P-256 CA per module,
served on free ports."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from services.ca_sim import issuance
from services.ca_sim.crl import CrlPublisher
from services.ca_sim.ledger import Ledger
from services.ca_sim.profiles import DEFAULT
from services.ca_sim.revocations import revoke
from services.ca_sim.scep_identity import load_identity
from services.ca_sim.service import start_in_thread
from services.cli.main import main as certfleet
from shared.protocols import est as est_codec
from shared.protocols import scep
from tests.support.ca_peers import p256_csr, pkilint, run, write_pem
from tests.support.scep_peers import csr_for, now, rsa_key

ROOT = Path(__file__).resolve().parents[3]
USER, PASSWORD = "est-admin", "Revocation-Secret-5"
CHALLENGE = "Scep-Revocation-Challenge-3"
EST = "/.well-known/est"


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HOSTS = ["127.0.0.1", "::1"] if ipv6_loopback() else ["127.0.0.1"]


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    running = start_in_thread(tmp_path_factory.mktemp("ca-revocation") / "state", host=HOSTS, key_type="ecdsa",
                              est_user=USER, est_password=PASSWORD, scep_port=0, scep_challenge=CHALLENGE,
                              http_port=0)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def files(ca, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ca-files")
    return {"issuing": write_pem(out / "issuing.pem", ca.ca.issuing), "chain": ca.chain,
            "root": write_pem(out / "root.pem", ca.ca.root), "signer": ca.ocsp_signer}


@pytest.fixture(scope="module")
def est(ca):
    with httpx.Client(base_url=ca.est_url, verify=ssl.create_default_context(cafile=str(ca.tls_ca)),
                      timeout=10) as client:
        yield client


def enroll(est: httpx.Client, name: str, *, label: str = "") -> tuple[object, x509.Certificate]:
    key, csr = p256_csr(name, sans=[name])
    path = f"{EST}/{label}/simpleenroll" if label else f"{EST}/simpleenroll"
    answer = est.post(path, content=est_codec.encode_csr(csr), headers={"Content-Type": "application/pkcs10"},
                      auth=(USER, PASSWORD))
    assert answer.status_code == 200, answer.text
    (cert,) = est_codec.decode_certs_only(answer.content)
    return key, cert


def re_enroll(ca, tmp_path: Path, key, cert: x509.Certificate, *, label: str = "", same_key: bool = False):
    ctx = ssl.create_default_context(cafile=str(ca.tls_ca))
    ctx.load_cert_chain(write_pem(tmp_path / "client.pem", cert), write_pem(tmp_path / "client.key", key))
    name = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    new_key, csr = p256_csr(name, sans=[name], key=key if same_key else None)
    path = f"{EST}/{label}/simplereenroll" if label else f"{EST}/simplereenroll"
    with httpx.Client(base_url=ca.est_url, verify=ctx, timeout=10) as client:
        answer = client.post(path, content=est_codec.encode_csr(csr), headers={"Content-Type": "application/pkcs10"})
    assert answer.status_code == 200, answer.text
    (renewed,) = est_codec.decode_certs_only(answer.content)
    return new_key, renewed


def openssl_ocsp(files, cert_file: Path, url: str, *args: str) -> str:
    done = run(["openssl", "ocsp", "-issuer", str(files["issuing"]), "-cert", str(cert_file), "-url", url, *args])
    return done.stdout.decode() + done.stderr.decode()


def lint_ocsp(response: Path) -> str:
    return pkilint("lint_ocsp_response", str(response))


def lint_crl(crl: Path) -> str:
    return pkilint("lint_crl", "-t", "CRL", "-p", "PKIX", str(crl))


def lint_cert(cert: Path) -> str:
    return pkilint("lint_pkix_cert", str(cert))


def fetch_crl(url: str) -> x509.CertificateRevocationList:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(answer.content)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def never_recorded(ca, name: str) -> x509.Certificate:
    """A certificate the issuing CA signed but the ledger never saw: a serial the CA never issued."""
    _, csr = p256_csr(name)
    return issuance.issue_from_request(csr, DEFAULT, issuer=ca.ca.issuing, issuer_key=ca.ca.issuing_key,
                                       now=datetime.now(UTC))


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None,
                 algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def post_ocsp(ca, der: bytes, **headers: str) -> httpx.Response:
    return httpx.post(ca.revocation.ocsp, content=der,
                      headers={"Content-Type": "application/ocsp-request", **headers}, timeout=10)


def ocsp_answer(response: httpx.Response) -> ocsp.OCSPResponse:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


# --- what issued certificates carry -----------------------------------------------------------

def test_issued_certificates_point_at_the_crl_and_the_ocsp_responder(ca, est, tmp_path):
    port = ca.http_url.rsplit(":", 1)[1]
    assert ca.revocation.crl == f"http://127.0.0.1:{port}/crl/issuing.crl"
    assert ca.revocation.ocsp == f"http://127.0.0.1:{port}/ocsp"
    assert ca.http_urls == [f"http://{'[::1]' if h == '::1' else h}:{port}" for h in HOSTS]
    assert f" http={ca.http_url}" in ca.ready_line()
    _, cert = enroll(est, "fw-urls.example.net")
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for point in points for n in point.full_name] == [ca.revocation.crl]
    access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(a.access_method, a.access_location.value) for a in access] == [
        (AuthorityInformationAccessOID.OCSP, ca.revocation.ocsp)]
    assert lint_cert(write_pem(tmp_path / "cert.pem", cert)) == ""
    assert lint_cert(ca.ocsp_signer) == ""


def test_without_an_http_port_certificates_carry_no_revocation_urls(ca):
    with start_in_thread(ca.state_dir) as plain:
        assert plain.revocation is None and plain.http_urls == [] and " http=" not in plain.ready_line()
        _, csr = p256_csr("fw-plain.example.net")
        cert = plain.ca.issue(csr, DEFAULT)
    for kind in (x509.CRLDistributionPoints, x509.AuthorityInformationAccess):
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(kind)


@pytest.mark.skipif("::1" not in HOSTS, reason="no IPv6 loopback on this machine")
def test_an_ipv6_ca_puts_its_address_in_brackets_and_answers_over_ipv6(ca, files, tmp_path):
    with start_in_thread(ca.state_dir, host="::1", http_port=0) as v6:
        port = v6.http_url.rsplit(":", 1)[1]
        assert v6.http_url == f"http://[::1]:{port}"
        assert v6.revocation.crl == f"http://[::1]:{port}/crl/issuing.crl"
        assert v6.revocation.ocsp == f"http://[::1]:{port}/ocsp"
        _, csr = p256_csr("fw-v6.example.net")
        cert = v6.ca.issue(csr, DEFAULT)
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert points[0].full_name[0].value == f"http://[::1]:{port}/crl/issuing.crl"
        said = openssl_ocsp(files, write_pem(tmp_path / "v6.pem", cert), v6.revocation.ocsp,
                            "-CAfile", str(files["chain"]))
        assert f"{tmp_path / 'v6.pem'}: good" in said and "Response verify OK" in said
        assert crl_number(fetch_crl(v6.revocation.crl)) >= 1
    # The module's CA listens on both families: the same answers over [::1].
    v6_url = ca.http_urls[1]
    assert fetch_crl(f"{v6_url}/crl/issuing.crl").issuer == ca.ca.issuing.subject
    with start_in_thread(ca.state_dir, http_port=0, public_host="2001:db8::7") as public:
        assert public.revocation.ocsp.startswith("http://[2001:db8::7]:")


def test_a_bad_public_host_is_refused_before_anything_listens(ca):
    for bad in ("http://x", "a b", "[::1"):
        with pytest.raises(ValueError, match="neither an IP address nor a host name"):
            start_in_thread(ca.state_dir, http_port=0, public_host=bad)


# --- openssl ocsp ----------------------------------------------------------------------------

def test_openssl_ocsp_good_revoked_and_unknown_verified_and_lint_clean(ca, est, files, tmp_path):
    _, good = enroll(est, "fw-good.example.net")
    _, bad = enroll(est, "fw-revoked.example.net")
    good_file, bad_file = write_pem(tmp_path / "good.pem", good), write_pem(tmp_path / "bad.pem", bad)
    unknown_file = write_pem(tmp_path / "unknown.pem", never_recorded(ca, "fw-unknown.example.net"))
    revocation, changed = revoke(ca.state_dir, serial=bad.serial_number, reason="keyCompromise")
    assert changed and revocation.revoked_at.microsecond == 0
    url = ca.revocation.ocsp
    for verify in (["-CAfile", str(files["chain"])], ["-VAfile", str(files["signer"])]):
        said = openssl_ocsp(files, good_file, url, *verify, "-respout", str(tmp_path / "good.der"))
        assert f"{good_file}: good" in said and "Response verify OK" in said, said
        said = openssl_ocsp(files, bad_file, url, *verify, "-respout", str(tmp_path / "revoked.der"))
        assert f"{bad_file}: revoked" in said and "Reason: keyCompromise" in said, said
        assert f"Revocation Time: {revocation.revoked_at:%b} {revocation.revoked_at.day:2d} " in said
        assert "Response verify OK" in said
        said = openssl_ocsp(files, unknown_file, url, *verify, "-respout", str(tmp_path / "unknown.der"))
        assert f"{unknown_file}: unknown" in said and "Response verify OK" in said, said
    for name in ("good", "revoked", "unknown"):
        assert lint_ocsp(tmp_path / f"{name}.der") == "", name
    answer = ocsp.load_der_ocsp_response((tmp_path / "revoked.der").read_bytes())
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.key_compromise
    assert answer.revocation_time_utc == revocation.revoked_at
    assert answer.certificates == [x509.load_pem_x509_certificate(files["signer"].read_bytes())]
    assert answer.next_update_utc - answer.this_update_utc == timedelta(minutes=10)


def test_openssl_nonce_is_echoed_and_a_request_without_one_gets_none(ca, est, files, tmp_path):
    _, cert = enroll(est, "fw-nonce.example.net")
    cert_file = write_pem(tmp_path / "cert.pem", cert)
    said = openssl_ocsp(files, cert_file, ca.revocation.ocsp, "-nonce", "-CAfile", str(files["chain"]),
                        "-reqout", str(tmp_path / "req.der"), "-respout", str(tmp_path / "resp.der"))
    # openssl says "WARNING: no nonce in response" or "Nonce Verify error" when it is not echoed.
    assert "Response verify OK" in said and "WARNING" not in said and "Nonce Verify" not in said, said
    sent = ocsp.load_der_ocsp_request((tmp_path / "req.der").read_bytes())
    answered = ocsp.load_der_ocsp_response((tmp_path / "resp.der").read_bytes())
    nonce = sent.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    assert answered.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert lint_ocsp(tmp_path / "resp.der") == ""
    openssl_ocsp(files, cert_file, ca.revocation.ocsp, "-no_nonce", "-CAfile", str(files["chain"]),
                 "-respout", str(tmp_path / "plain.der"))
    plain = ocsp.load_der_ocsp_response((tmp_path / "plain.der").read_bytes())
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.OCSPNonce)


def test_answers_signed_by_the_ca_itself_when_asked(ca, est, files, tmp_path):
    _, cert = enroll(est, "fw-ca-signed.example.net")
    cert_file = write_pem(tmp_path / "cert.pem", cert)
    with start_in_thread(ca.state_dir, http_port=0, ocsp_delegated=False, ocsp_validity=None) as direct:
        said = openssl_ocsp(files, cert_file, direct.revocation.ocsp, "-CAfile", str(files["chain"]),
                            "-respout", str(tmp_path / "resp.der"))
    assert f"{cert_file}: good" in said and "Response verify OK" in said, said
    answer = ocsp.load_der_ocsp_response((tmp_path / "resp.der").read_bytes())
    assert answer.certificates == [] and answer.next_update_utc is None
    ski = ca.ca.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert answer.responder_key_hash == ski
    assert lint_ocsp(tmp_path / "resp.der") == ""


# --- the CRL ---------------------------------------------------------------------------------

def test_crl_verifies_lints_clean_and_is_reissued_with_the_next_number_after_a_revocation(ca, est, files, tmp_path):
    before = fetch_crl(ca.revocation.crl)
    assert crl_number(fetch_crl(ca.revocation.crl)) == crl_number(before)  # nothing happened: the same CRL
    assert before.next_update_utc - before.last_update_utc == timedelta(hours=1)
    _, cert = enroll(est, "fw-crl.example.net")
    revocation, _ = revoke(ca.state_dir, serial=cert.serial_number, reason="superseded")
    after = fetch_crl(ca.revocation.crl)
    assert crl_number(after) == crl_number(before) + 1
    entry = after.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry.revocation_date_utc == revocation.revoked_at
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.superseded
    ski = ca.ca.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert after.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == ski
    crl_file = tmp_path / "issuing.crl"
    crl_file.write_bytes(after.public_bytes(serialization.Encoding.DER))
    done = run(["openssl", "crl", "-inform", "DER", "-in", str(crl_file), "-noout", "-verify",
                "-CAfile", str(files["chain"])])
    assert b"verify OK" in done.stderr + done.stdout
    assert lint_crl(crl_file) == ""


def test_an_unspecified_reason_is_left_out_and_a_hold_can_be_made_permanent(ca, est):
    _, plain = enroll(est, "fw-unspecified.example.net")
    _, held = enroll(est, "fw-held.example.net")
    revoke(ca.state_dir, serial=plain.serial_number)
    first, _ = revoke(ca.state_dir, serial=held.serial_number, reason="certificateHold")
    again, changed = revoke(ca.state_dir, serial=held.serial_number, reason="keyCompromise")
    assert changed and again.revoked_at == first.revoked_at and again.reason == "keyCompromise"
    crl = fetch_crl(ca.revocation.crl)
    with pytest.raises(x509.ExtensionNotFound):
        crl.get_revoked_certificate_by_serial_number(plain.serial_number).extensions.get_extension_for_class(
            x509.CRLReason)
    entry = crl.get_revoked_certificate_by_serial_number(held.serial_number)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise
    answer = ocsp_answer(post_ocsp(ca, ocsp_request(plain, ca.ca.issuing)))
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED and answer.revocation_reason is None


def test_crl_is_reissued_when_half_its_life_is_over(ca):
    clock = [datetime(2030, 1, 1, tzinfo=UTC)]
    crls = CrlPublisher(ca.ca, validity=timedelta(minutes=20), clock=lambda: clock[0])
    first = crls.current()
    assert first.next_update - first.this_update == timedelta(minutes=20)
    clock[0] += timedelta(minutes=9, seconds=59)
    assert crls.current().number == first.number
    clock[0] += timedelta(seconds=1)
    second = crls.current()
    assert second.number == first.number + 1 and second.next_update == clock[0] + timedelta(minutes=20)
    loaded = x509.load_der_x509_crl(second.der)
    assert loaded.next_update_utc == second.next_update and crl_number(loaded) == second.number


# --- HTTP: GET and POST, bad requests ---------------------------------------------------------

def test_get_and_post_forms_answer_alike(ca, est):
    _, cert = enroll(est, "fw-forms.example.net")
    der = ocsp_request(cert, ca.ca.issuing, nonce=b"\x01" * 16, algorithm=hashes.SHA256())
    std = base64.b64encode(der).decode()
    url_safe = base64.urlsafe_b64encode(der).decode().rstrip("=")
    for path in (quote(std, safe=""), std, url_safe):
        got = httpx.get(f"{ca.revocation.ocsp}/{path}", timeout=10)
        answer = ocsp_answer(got)
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD and answer.serial_number == cert.serial_number
        assert answer.hash_algorithm.name == "sha256"
        assert got.headers["Cache-Control"].startswith("max-age=")
    posted = post_ocsp(ca, der)
    assert ocsp_answer(posted).certificate_status is ocsp.OCSPCertStatus.GOOD
    assert posted.headers["Cache-Control"] == "no-store"


def test_malformed_oversized_and_foreign_requests_get_clear_answers_never_a_500(ca, est, tmp_path):
    _, cert = enroll(est, "fw-bad-requests.example.net")
    malformed = ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    for body in (b"", b"not an OCSP request", b"\x30\x03\x02\x01\x01", ocsp_request(cert, ca.ca.issuing)[:-3]):
        answered = post_ocsp(ca, body)
        assert ocsp_answer(answered).response_status is malformed, body
    (tmp_path / "malformed.der").write_bytes(answered.content)
    assert lint_ocsp(tmp_path / "malformed.der") == ""
    for path in ("", "/", "/not*base64", "/" + base64.b64encode(b"garbage").decode()):
        assert ocsp_answer(httpx.get(ca.revocation.ocsp + path, timeout=10)).response_status is malformed, path
    long_nonce = ocsp_request(cert, ca.ca.issuing, nonce=b"n" * 33)
    assert ocsp_answer(post_ocsp(ca, long_nonce)).response_status is malformed

    foreign = ocsp.OCSPRequestBuilder().add_certificate(ca.ca.issuing, ca.ca.root, hashes.SHA1()).build()
    answer = ocsp_answer(post_ocsp(ca, foreign.public_bytes(serialization.Encoding.DER)))
    assert answer.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED

    big = b"\x30" * (64 * 1024 + 1)
    too_large = post_ocsp(ca, big)
    assert too_large.status_code == 413 and too_large.json()["code"] == "request_too_large"
    # httpx refuses URLs this long; http.client sends them.
    connection = http.client.HTTPConnection("127.0.0.1", int(ca.http_url.rsplit(":", 1)[1]), timeout=10)
    connection.request("GET", f"/ocsp/{base64.urlsafe_b64encode(big).decode()}")
    too_long = connection.getresponse()
    assert too_long.status == 413 and json.loads(too_long.read())["code"] == "request_too_large"
    connection.close()
    wrong_type = post_ocsp(ca, ocsp_request(cert, ca.ca.issuing), **{"Content-Type": "application/json"})
    assert wrong_type.status_code == 415 and wrong_type.json()["code"] == "unsupported_media_type"
    missing = httpx.get(ca.http_url + "/crl/other.crl", timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert httpx.delete(ca.revocation.ocsp, timeout=10).status_code == 405
    assert httpx.post(ca.revocation.crl, timeout=10).status_code == 405


# --- SCEP --------------------------------------------------------------------------------------

def scep_answer(ca, message: bytes, requester: scep.Requester, *, label: str) -> x509.Certificate:
    answer = httpx.post(f"{ca.scep_url}/{label}/scep?operation=PKIOperation", content=message,
                        headers={"Content-Type": scep.PKI_MESSAGE}, timeout=10)
    assert answer.status_code == 200, answer.text
    rep = scep.parse_cert_rep(answer.content, requester)
    assert rep.status is scep.PkiStatus.SUCCESS, rep
    return rep.certs[0]


def test_scep_renewal_with_a_new_key_revokes_the_old_certificate_under_the_superseding_profile(ca):
    ra = load_identity(ca.ca).responder.cert
    first_key, second_key = rsa_key(), rsa_key()
    csr = csr_for(first_key, "fw-scep-supersede.example.net", challenge=CHALLENGE)
    signer = scep.self_signed_signer(first_key, csr.subject, now=now())
    first = scep_answer(ca, scep.build_pkcs_req(
        scep.Requester(key=first_key, cert=signer, recipient=ra), csr, transaction_id="supersede-1",
        sender_nonce=scep.new_nonce(), now=now()), scep.Requester(key=first_key, cert=signer, recipient=ra),
        label="revoke-superseded")
    points = first.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value == ca.revocation.crl  # SCEP-issued certificates carry them too
    renewing = scep.Requester(key=first_key, cert=first, recipient=ra)
    second = scep_answer(ca, scep.build_renewal_req(
        renewing, csr_for(second_key, "fw-scep-supersede.example.net"), transaction_id="supersede-2",
        sender_nonce=scep.new_nonce(), now=now()), renewing, label="revoke-superseded")
    state = Ledger(ca.ca.paths.ledger_db).lookup(first.serial_number)
    assert state.revocation is not None and state.revocation.reason == "superseded"
    assert ocsp_answer(post_ocsp(ca, ocsp_request(second, ca.ca.issuing))).certificate_status \
        is ocsp.OCSPCertStatus.GOOD


# --- superseded certificates (EST) -------------------------------------------------------------

def test_est_re_enrollment_with_a_new_key_revokes_the_superseded_certificate_only_when_the_profile_says(
        ca, est, tmp_path):
    def status(cert):
        return ocsp_answer(post_ocsp(ca, ocsp_request(cert, ca.ca.issuing)))

    key, old = enroll(est, "fw-supersede.example.net", label="revoke-superseded")
    new_key, renewed = re_enroll(ca, tmp_path, key, old, label="revoke-superseded")
    answer = status(old)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.superseded
    assert status(renewed).certificate_status is ocsp.OCSPCertStatus.GOOD
    # The same key again (a renewal, not a re-key): nothing is revoked.
    _, same = re_enroll(ca, tmp_path, new_key, renewed, label="revoke-superseded", same_key=True)
    assert status(renewed).certificate_status is ocsp.OCSPCertStatus.GOOD
    # Off by default: the default profile revokes nothing.
    key, plain = enroll(est, "fw-keep.example.net")
    re_enroll(ca, tmp_path, key, plain)
    assert status(plain).certificate_status is ocsp.OCSPCertStatus.GOOD


# --- certfleet ca revoke / revocations ---------------------------------------------------------

def test_revoke_and_revocations_commands(ca, est, files, tmp_path, capsys):
    _, by_serial = enroll(est, "fw-cli-serial.example.net")
    _, by_file = enroll(est, "fw-cli-file.example.net")
    capsys.readouterr()  # the server's log lines so far
    state = str(ca.state_dir)
    colons = ":".join(f"{by_serial.serial_number:040X}"[i:i + 2] for i in range(0, 40, 2))
    assert certfleet(["ca", "revoke", "--state-dir", state, "--serial", colons,
                      "--reason", "cessationOfOperation"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"revoked {by_serial.serial_number:x} (CN=fw-cli-serial.example.net,")
    cert_file = write_pem(tmp_path / "by-file.pem", by_file)
    assert certfleet(["ca", "revoke", "--state-dir", state, "--cert", str(cert_file)]) == 0
    assert "reason unspecified" in capsys.readouterr().out
    # Again with the same reason: nothing to do. With another: refused.
    assert certfleet(["ca", "revoke", "--state-dir", state, "--cert", str(cert_file)]) == 0
    assert "already revoked" in capsys.readouterr().out
    assert certfleet(["ca", "revoke", "--state-dir", state, "--cert", str(cert_file), "--reason",
                      "keyCompromise"]) == 1
    assert "error: already_revoked: " in capsys.readouterr().err

    assert certfleet(["ca", "revocations", "--state-dir", state, "--json"]) == 0
    listed = {r["serial"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[f"{by_serial.serial_number:x}"]["reason"] == "cessationOfOperation"
    assert listed[f"{by_file.serial_number:x}"]["subject"] == by_file.subject.rfc4514_string()
    assert certfleet(["ca", "revocations", "--state-dir", state]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["SERIAL", "REVOKED", "REASON", "SUBJECT"]
    assert any(line.startswith(f"{by_file.serial_number:x} ") and " unspecified " in line for line in table)

    # The running server (this process; the CLI could be another): OCSP says so at once.
    answer = ocsp_answer(post_ocsp(ca, ocsp_request(by_serial, ca.ca.issuing)))
    assert answer.revocation_reason is x509.ReasonFlags.cessation_of_operation


def test_revoke_refuses_what_the_ca_never_issued(ca, tmp_path, capsys):
    state = str(ca.state_dir)
    assert certfleet(["ca", "revoke", "--state-dir", state, "--serial", "0x1234abcd"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: unknown_serial: this CA never issued a certificate with serial 1234abcd; `certfleet ca "
        "revocations` lists the revoked ones")
    assert certfleet(["ca", "revoke", "--state-dir", state, "--serial", "xyz"]) == 2
    assert "error: bad_serial: serial 'xyz' is not a hexadecimal number" in capsys.readouterr().err
    foreign_key, csr = p256_csr("fw-foreign.example.net")
    foreign = csr.subject  # a self-signed certificate: not this CA's
    now_ = datetime.now(UTC)
    selfsigned = (x509.CertificateBuilder().subject_name(foreign).issuer_name(foreign)
                  .public_key(foreign_key.public_key()).serial_number(x509.random_serial_number())
                  .not_valid_before(now_).not_valid_after(now_ + timedelta(days=1)).sign(foreign_key, hashes.SHA256()))
    foreign_file = write_pem(tmp_path / "foreign.pem", selfsigned)
    assert certfleet(["ca", "revoke", "--state-dir", state, "--cert", str(foreign_file)]) == 1
    assert "error: not_issued_by_ca: " in capsys.readouterr().err
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert certfleet(["ca", "revoke", "--state-dir", state, "--cert", str(tmp_path / "junk.pem")]) == 1
    assert "error: not_a_certificate: " in capsys.readouterr().err
    assert certfleet(["ca", "revocations", "--state-dir", str(tmp_path / "nothing")]) == 1
    assert "error: no_ca: " in capsys.readouterr().err


def test_serve_in_another_process_answers_a_revocation_made_here_at_once(ca, tmp_path):
    """``certfleet ca serve --http-port`` as its own process on the module's state directory:
    its ready line names the HTTP URLs, and a revocation recorded by this process shows in its
    next OCSP answer and its next CRL."""
    out = (tmp_path / "serve.out").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.ca_sim", "serve", "--state-dir", str(ca.state_dir), "--est-port", "0",
         "--http-port", "0", "--crl-hours", "0.5", "--ocsp-minutes", "0"],
        cwd=ROOT, stdout=out, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (line := (out.seek(0), out.readline())[1]) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert " http=http://127.0.0.1:" in line, line
        http_url = line.split(" http=")[1].split()[0]
        _, csr = p256_csr("fw-other-process.example.net")
        cert = ca.ca.issue(csr, DEFAULT)
        request = ocsp_request(cert, ca.ca.issuing)
        post = lambda: httpx.post(f"{http_url}/ocsp", content=request,  # noqa: E731
                                  headers={"Content-Type": "application/ocsp-request"}, timeout=10)
        assert ocsp.load_der_ocsp_response(post().content).certificate_status is ocsp.OCSPCertStatus.GOOD
        before = fetch_crl(f"{http_url}/crl/issuing.crl")
        assert before.next_update_utc - before.last_update_utc == timedelta(minutes=30)
        revoke(ca.state_dir, serial=cert.serial_number, reason="affiliationChanged")
        answer = ocsp.load_der_ocsp_response(post().content)
        assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED and answer.next_update_utc is None
        after = fetch_crl(f"{http_url}/crl/issuing.crl")
        assert crl_number(after) > crl_number(before)
        assert after.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        out.close()
