"""The CA simulator's EST server against real clients: strongSwan's ``pki`` (enroll, re-enroll
with its certificate, poll while a request waits for approval), Python's ssl and httpx, with
openssl and pkilint checking what comes back. One CA per module, served on a free port."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from services.ca_sim.pending import list_requests
from services.ca_sim.profiles import IPSEC_IKE_INTERMEDIATE
from services.ca_sim.service import start_in_thread
from services.device_sim.ca_client.ipsec_eku import check_ipsec_eku
from shared.protocols import est as est_codec
from tests.support.ca_peers import lint, openssl_verify, p256_csr, pki, run, spki, write_pem
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]
USER, PASSWORD = "est-admin", "Never-Logged-42"
EST = "/.well-known/est"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    running = start_in_thread(tmp_path_factory.mktemp("ca-est"), est_user=USER, est_password=PASSWORD,
                              retry_after=1)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def manual_ca(ca):
    """A second server on the same CA whose unlabelled path needs approval: strongSwan's pki
    forgets the URL's path when it polls, so it can only poll the default profile."""
    running = start_in_thread(ca.state_dir, est_user=USER, est_password=PASSWORD, retry_after=1,
                              default_profile="ms2012-manual")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(ca):
    with httpx.Client(base_url=ca.est_url, verify=ssl.create_default_context(cafile=str(ca.tls_ca)),
                      timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def ca_files(ca, tmp_path_factory):
    """The root and issuing CA as ``pki --estca`` fetched them."""
    out = tmp_path_factory.mktemp("estca")
    done = run([pki(), "--estca", "--url", ca.est_url, "--cacert", str(ca.tls_ca),
                "--caout", str(out / "ca.pem"), "--outform", "pem"])
    assert b"Root CA cert is trusted" in done.stderr, done.stderr
    return out / "ca.pem", out / "ca-1.pem"


def pem_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def pki_key_and_request(workdir: Path, name: str, dn: str, *, key_type: str = "ecdsa",
                        san: str | None = None) -> tuple[Path, Path]:
    size = "256" if key_type == "ecdsa" else "2048"
    key = workdir / f"{name}.key"
    key.write_bytes(run([pki(), "--gen", "--type", key_type, "--size", size, "--outform", "pem"]).stdout)
    args = [pki(), "--req", "--in", str(key), "--type", key_type, "--dn", dn, "--outform", "pem"]
    if san:
        args += ["--san", san]
    csr = workdir / f"{name}.csr"
    csr.write_bytes(run(args).stdout)
    return key, csr


def pki_est(ca, ca_files, csr: Path, *more: str, url: str | None = None, check: bool = True):
    root, issuing = ca_files
    return run([pki(), "--est", "--url", url or ca.est_url, "--cacert", str(root), "--cacert", str(issuing),
                "--in", str(csr), "--outform", "pem", *more], check=check)


def assert_issued_for(cert_file: Path, key_file: Path, csr_file: Path, ca_files) -> x509.Certificate:
    """What strongSwan does not check: the certificate is for our key and our subject; and it
    verifies with openssl and lints clean."""
    cert = pem_cert(cert_file)
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    csr = x509.load_pem_x509_csr(csr_file.read_bytes())
    assert spki(cert.public_key()) == spki(key.public_key())
    assert cert.subject == csr.subject
    root, issuing = ca_files
    openssl_verify(cert_file, root=root, untrusted=issuing)
    assert lint(cert_file) == ""
    return cert


# --- strongSwan's pki ---------------------------------------------------------------------------

def test_pki_estca_gets_root_and_issuing_ca(ca, ca_files):
    root, issuing = ca_files
    assert pem_cert(root) == ca.ca.root and pem_cert(issuing) == ca.ca.issuing
    assert lint(root) == "" and lint(issuing) == ""


@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_pki_enrolls_with_basic_auth_then_re_enrolls_with_its_certificate(ca, ca_files, tmp_path, key_type):
    dn = f"C=US, O=certfleet, CN=fw-{key_type}.example.net"
    key, csr = pki_key_and_request(tmp_path, "first", dn, key_type=key_type, san=f"fw-{key_type}.example.net")
    done = pki_est(ca, ca_files, csr, "--userpass", f"{USER}:{PASSWORD}")
    (tmp_path / "first.pem").write_bytes(done.stdout)
    first = assert_issued_for(tmp_path / "first.pem", key, csr, ca_files)
    assert first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [f"fw-{key_type}.example.net"]
    assert b"Issued certificate is trusted" in done.stderr

    # simplereenroll: a new key pair, authenticated by the TLS client certificate alone.
    new_key, new_csr = pki_key_and_request(tmp_path, "second", dn, key_type=key_type,
                                           san=f"fw-{key_type}.example.net")
    done = pki_est(ca, ca_files, new_csr, "--cert", str(tmp_path / "first.pem"), "--key", str(key))
    (tmp_path / "second.pem").write_bytes(done.stdout)
    second = assert_issued_for(tmp_path / "second.pem", new_key, new_csr, ca_files)
    assert second.serial_number != first.serial_number


def test_pki_re_enrollment_must_keep_the_subject(ca, ca_files, tmp_path):
    key, csr = pki_key_and_request(tmp_path, "old", "CN=fw-keep.example.net")
    (tmp_path / "old.pem").write_bytes(pki_est(ca, ca_files, csr, "--userpass", f"{USER}:{PASSWORD}").stdout)
    _, other = pki_key_and_request(tmp_path, "other", "CN=someone-else.example.net")
    done = pki_est(ca, ca_files, other, "--cert", str(tmp_path / "old.pem"), "--key", str(key), check=False)
    assert done.returncode != 0 and b"HTTP 400" in done.stderr


def test_pki_without_or_with_a_wrong_password_gets_401(ca, ca_files, tmp_path):
    _, csr = pki_key_and_request(tmp_path, "anon", "CN=anon.example.net")
    for extra in ([], ["--userpass", f"{USER}:wrong"]):
        done = pki_est(ca, ca_files, csr, *extra, check=False)
        assert done.returncode != 0 and b"HTTP 401" in done.stderr


def test_pki_polls_a_pending_request_until_the_operator_approves_it(manual_ca, ca_files, tmp_path):
    ca = manual_ca
    key, csr = pki_key_and_request(tmp_path, "manual", "C=US, O=certfleet, CN=fw-manual.example.net")
    root, issuing = ca_files
    log = (tmp_path / "pki.log").open("wb")
    client = subprocess.Popen(
        [pki(), "--est", "--url", ca.est_url, "--cacert", str(root), "--cacert",
         str(issuing), "--in", str(csr), "--userpass", f"{USER}:{PASSWORD}", "--interval", "1",
         "--maxpolltime", "30", "--outform", "pem"],
        stdout=(tmp_path / "manual.pem").open("wb"), stderr=log,
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
        assert f"approved {request.id}" in approved.stdout
        assert client.wait(timeout=20) == 0
    finally:
        client.kill() if client.poll() is None else None
        log.close()
    assert b"EST request pending" in (tmp_path / "pki.log").read_bytes()
    assert_issued_for(tmp_path / "manual.pem", key, csr, ca_files)
    assert all(r.id != request.id for r in list_requests(ca.state_dir))


def _wait_for_pending(ca, subject: str, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for request in list_requests(ca.state_dir):
            if request.subject == subject:
                return request
        time.sleep(0.1)
    raise AssertionError(f"no pending request for {subject}")


# --- HTTP details -------------------------------------------------------------------------------

def enroll(http, csr, *, path: str = f"{EST}/simpleenroll", auth=(USER, PASSWORD), **kw) -> httpx.Response:
    return http.post(path, content=est_codec.encode_csr(csr), auth=auth,
                     headers={"Content-Type": "application/pkcs10"}, **kw)


def test_responses_are_what_strongswan_can_read(http, ca):
    response = http.get(f"{EST}/cacerts")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert response.headers["Content-Transfer-Encoding"] == "base64"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert "Transfer-Encoding" not in response.headers
    assert b"\n" not in response.content
    assert set(est_codec.decode_certs_only(response.content)) == {ca.ca.root, ca.ca.issuing}


def test_csrattrs_lists_the_signature_algorithms(http):
    response = http.get(f"{EST}/csrattrs")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/csrattrs"
    assert "1.2.840.10045.4.3.2" in est_codec.decode_csr_attrs(response.content)  # ecdsa-with-SHA256


def test_ms2012_ipsec_label_issues_the_eku_the_device_refuses(http):
    key, csr = p256_csr("vpn-fw.example.net")
    response = enroll(http, csr, path=f"{EST}/ms2012-ipsec/simpleenroll")
    assert response.status_code == 200, response.text
    (cert,) = est_codec.decode_certs_only(response.content)
    assert spki(cert.public_key()) == spki(key.public_key())
    ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == [IPSEC_IKE_INTERMEDIATE]
    problem = check_ipsec_eku(cert)
    assert problem and "Duplicate the IPsec (Offline Request) template" in problem
    assert http.get(f"{EST}/ms2012-ipsec/cacerts").status_code == 200


def test_manual_approval_over_the_admin_endpoint(http, ca):
    key, csr = p256_csr("fw-admin.example.net")
    path = f"{EST}/ms2012-manual/simpleenroll"
    first = enroll(http, csr, path=path)
    assert first.status_code == 202 and first.headers["Retry-After"] == "1"
    # The device asks again with a freshly signed copy of the same request: still one request.
    _, again_csr = p256_csr("fw-admin.example.net", key=key)
    assert enroll(http, again_csr, path=path).status_code == 202
    mine = [r for r in list_requests(ca.state_dir) if "fw-admin" in r.subject]
    assert len(mine) == 1
    approve_url = f"/admin/requests/{mine[0].id}/approve"
    assert http.post(approve_url).status_code == 401
    assert http.post(approve_url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.post("/admin/requests/nope/approve",
                     headers={"Authorization": f"Bearer {ca.admin_token}"}).status_code == 404
    listed = http.get("/admin/requests", headers={"Authorization": f"Bearer {ca.admin_token}"}).json()
    assert mine[0].id in [r["id"] for r in listed["items"]]
    assert "csr_pem" not in listed["items"][0]
    approved = http.post(approve_url, headers={"Authorization": f"Bearer {ca.admin_token}"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    issued = enroll(http, csr, path=path)
    assert issued.status_code == 200
    (cert,) = est_codec.decode_certs_only(issued.content)
    assert spki(cert.public_key()) == spki(key.public_key())
    # A client that lost the answer asks again and gets the same certificate, not a new one.
    assert est_codec.decode_certs_only(enroll(http, csr, path=path).content) == [cert]


def test_an_approval_issues_the_request_the_operator_approved_not_a_later_one_for_the_same_key(http, ca):
    """The attack: the operator approves a request for the device's own name; the device then
    sends, under the same key, a request for another subject and subjectAltName. It gets no
    certificate for those names: that is a new request waiting for approval, and the approved
    one is issued exactly as approved."""
    path = f"{EST}/ms2012-manual/simpleenroll"
    admin = {"Authorization": f"Bearer {ca.admin_token}"}
    key, approved_csr = p256_csr("fw-approved.example.net", sans=["fw-approved.example.net"])
    assert enroll(http, approved_csr, path=path).status_code == 202
    (held,) = [r for r in list_requests(ca.state_dir) if "fw-approved" in r.subject]
    assert http.post(f"/admin/requests/{held.id}/approve", headers=admin).status_code == 200

    _, other_csr = p256_csr("bank.example.com", sans=["bank.example.com"], key=key)
    _, more_sans = p256_csr("fw-approved.example.net", sans=["fw-approved.example.net", "bank.example.com"], key=key)
    for csr in (other_csr, more_sans):
        refused = enroll(http, csr, path=path)
        assert refused.status_code == 202, refused.text  # waits for its own approval
        assert held.id not in refused.text
    waiting = {r.subject for r in list_requests(ca.state_dir) if r.key_id == held.key_id}
    assert waiting == {"CN=bank.example.com,O=certfleet tests", "CN=fw-approved.example.net,O=certfleet tests"}

    # The approved request, asked for again (signed anew), is issued with the approved names.
    _, again = p256_csr("fw-approved.example.net", sans=["fw-approved.example.net"], key=key)
    issued = enroll(http, again, path=path)
    assert issued.status_code == 200, issued.text
    (cert,) = est_codec.decode_certs_only(issued.content)
    assert cert.subject == approved_csr.subject and spki(cert.public_key()) == spki(key.public_key())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["fw-approved.example.net"]


BAD_SIGNATURE = bytearray(p256_csr("tampered")[1].public_bytes(serialization.Encoding.DER))
BAD_SIGNATURE[-1] ^= 1


@pytest.mark.parametrize(("name", "request_kw", "status", "code"), [
    ("garbage body", dict(content=b"\x00\xff garbage \x01"), 400, "bad_base64"),
    ("base64 of no CSR", dict(content=base64.b64encode(b"not a request")), 400, "bad_csr"),
    ("signature does not verify", dict(content=base64.b64encode(bytes(BAD_SIGNATURE))), 400,
     "bad_csr_signature"),
    ("no credentials", dict(auth=None), 401, "authentication_required"),
    ("wrong password", dict(auth=(USER, "guess")), 401, "bad_credentials"),
    ("wrong user", dict(auth=("root", PASSWORD)), 401, "bad_credentials"),
    ("wrong content type", dict(headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
    ("no content type", dict(headers={"Content-Type": ""}), 415, "unsupported_media_type"),
    ("oversized body", dict(content=b"A" * (70 * 1024)), 413, "body_too_large"),
    ("oversized chunked body", dict(content=iter([b"A" * 8192] * 9)), 413, "body_too_large"),
    ("unknown label", dict(path=f"{EST}/no-such-ca/simpleenroll"), 404, "unknown_profile"),
    ("unknown operation", dict(path=f"{EST}/fullcmc"), 404, "not_found"),
])
def test_bad_input_gets_the_right_4xx_and_the_server_keeps_serving(http, name, request_kw, status, code):
    _, csr = p256_csr("fw-bad.example.net")
    kw = dict(request_kw)
    path = kw.pop("path", f"{EST}/simpleenroll")
    auth = kw.pop("auth", (USER, PASSWORD))
    headers = {"Content-Type": "application/pkcs10", **kw.pop("headers", {})}
    content = kw.pop("content", est_codec.encode_csr(csr))
    response = http.post(path, content=content, auth=auth, headers=headers)
    assert response.status_code == status, (name, response.text)
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == code and response.json()["detail"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert PASSWORD not in response.text
    assert http.get(f"{EST}/cacerts").status_code == 200


def test_wrong_method_is_405(http):
    response = http.get(f"{EST}/simpleenroll")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"


# --- TLS ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_are_both_accepted(ca, version):
    ctx = ssl.create_default_context(cafile=str(ca.tls_ca))
    ctx.minimum_version = ctx.maximum_version = version
    port = int(ca.est_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
    with httpx.Client(verify=ctx, timeout=5) as client:
        assert client.get(f"{ca.est_url}{EST}/cacerts").status_code == 200


def test_tls_signs_with_a_p256_key_under_the_rsa_ca_and_hands_out_no_session_tickets(ca):
    """What a handshake costs the CA: an ECDSA signature, not an RSA one, and no tickets that
    EST clients, one connection per enrollment, never use."""
    ctx = ssl.create_default_context(cafile=str(ca.tls_ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    port = int(ca.est_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(f"GET {EST}/cacerts HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        while tls.recv(65536):
            pass
        server = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        assert not tls.session.has_ticket
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey) and server.public_key().curve.name == "secp256r1"
    assert isinstance(ca.ca.issuing_key, rsa.RSAPrivateKey)
    server.verify_directly_issued_by(ca.ca.issuing)


def test_server_certificate_names_every_loopback_name(ca):
    port = int(ca.est_url.rsplit(":", 1)[1])
    for server_hostname in ("127.0.0.1", "localhost", "::1"):
        ctx = ssl.create_default_context(cafile=str(ca.tls_ca))  # checks the name against the SANs
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    assert "localhost" in san.get_values_for_type(x509.DNSName)


def _client_with_cert(ca, tmp_path: Path, cert: x509.Certificate, key) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(ca.tls_ca))
    ctx.load_cert_chain(write_pem(tmp_path / "client.pem", cert), write_pem(tmp_path / "client.key", key))
    return httpx.Client(base_url=ca.est_url, verify=ctx, timeout=10)


def test_re_enrollment_checks_the_client_certificate(http, ca, tmp_path):
    key, csr = p256_csr("fw-renew.example.net", sans=["fw-renew.example.net"])
    (old,) = est_codec.decode_certs_only(enroll(http, csr).content)
    reenroll = f"{EST}/simplereenroll"
    with _client_with_cert(ca, tmp_path, old, key) as client:
        new_key, new_csr = p256_csr("fw-renew.example.net", sans=["fw-renew.example.net"])
        renewed = client.post(reenroll, content=est_codec.encode_csr(new_csr),
                              headers={"Content-Type": "application/pkcs10"})
        assert renewed.status_code == 200, renewed.text
        (cert,) = est_codec.decode_certs_only(renewed.content)
        assert spki(cert.public_key()) == spki(new_key.public_key()) and cert.subject == old.subject
        _, other = p256_csr("fw-renew.example.net", sans=["elsewhere.example.net"])
        mismatch = client.post(reenroll, content=est_codec.encode_csr(other),
                               headers={"Content-Type": "application/pkcs10"})
        assert mismatch.status_code == 400 and mismatch.json()["code"] == "subject_mismatch"
    # Neither a certificate nor a password: 401. A password alone is accepted.
    anonymous = http.post(reenroll, content=est_codec.encode_csr(new_csr),
                          headers={"Content-Type": "application/pkcs10"})
    assert anonymous.status_code == 401
    assert enroll(http, new_csr, path=reenroll).status_code == 200


def test_a_client_certificate_from_another_ca_is_refused_in_the_handshake(http, ca, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    _, csr = p256_csr("intruder", key=key)
    now = datetime.now(UTC)
    foreign = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(csr.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    with _client_with_cert(ca, tmp_path, foreign, key) as client:
        with pytest.raises(httpx.HTTPError):
            client.post(f"{EST}/simplereenroll", content=est_codec.encode_csr(csr),
                        headers={"Content-Type": "application/pkcs10"})
    assert http.get(f"{EST}/cacerts").status_code == 200


def test_pkcs7_answer_parses_with_cryptography(http):
    """Guard for the device's client: the enroll answer holds exactly the issued certificate."""
    _, csr = p256_csr("fw-one.example.net")
    body = base64.b64decode(enroll(http, csr).content)
    certs = pkcs7.load_der_pkcs7_certificates(body)
    assert len(certs) == 1 and certs[0].subject == csr.subject


def test_serves_on_an_ipv6_literal(ca):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with start_in_thread(ca.state_dir, host="::1") as v6:
        assert v6.est_url.startswith("https://[::1]:")
        ctx = ssl.create_default_context(cafile=str(v6.tls_ca))
        with httpx.Client(verify=ctx, timeout=5) as client:
            response = client.get(f"{v6.est_url}{EST}/cacerts")
        assert response.status_code == 200
