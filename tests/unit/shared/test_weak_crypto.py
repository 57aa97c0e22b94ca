"""The pure parts of manual and PKCS12 enrollment: the weak-crypto policy, reading a PKCS#12
file's structure and encryption, opening and exporting one, and the checks an imported
identity certificate must pass. Certificates and files come from the real ``openssl`` where
cryptography would refuse to make them (SHA-1 and MD5 signatures, legacy PKCS#12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import NameOID

from services.controller.rules.pkcs12_upload import trustpoint_name
from shared.certificate_import import check_identity_import, parse_upload
from shared.chains import issuing_chain
from shared.errors import ValidationError, WeakCryptoError
from shared.pkcs12 import MAX_PKCS12_BYTES, check_size, export_pkcs12, inspect, open_pkcs12
from shared.weak_crypto import enforce, weak_certificate, weak_cipher, weak_public_key, weak_rsa_size
from tests.support.openssl_pki import OpensslCa, new_key, openssl, pkcs12_algorithms, read_pkcs12

NOW = datetime.now(UTC)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(subject: str, key, *, issuer: tuple[str, object] | None = None, ca: bool = False,
              not_before: datetime | None = None, days: int = 30) -> x509.Certificate:
    issuer_name, issuer_key = (subject, key) if issuer is None else issuer
    start = not_before or NOW - timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def p256():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def operator_ca(tmp_path_factory) -> OpensslCa:
    return OpensslCa(tmp_path_factory.mktemp("weak-ca"))


@pytest.fixture(scope="module")
def rsa_ca(tmp_path_factory) -> OpensslCa:
    return OpensslCa(tmp_path_factory.mktemp("weak-rsa-ca"), key_kind="rsa")


# --- the policy ---------------------------------------------------------------------------------

def test_weak_keys_signatures_and_ciphers_are_named():
    assert weak_rsa_size(1024) == "RSA-1024" and weak_rsa_size(2048) is None
    assert weak_public_key(rsa.generate_private_key(65537, 1024).public_key()) == "RSA-1024"
    assert weak_public_key(dsa.generate_private_key(2048).public_key()) == "DSA-2048"
    assert weak_public_key(p256().public_key()) is None
    assert weak_cipher("tripledes", "3DES") == "3DES" and weak_cipher("rc2", "RC2") == "RC2"
    assert weak_cipher("aes", "AES") is None


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_sha1_and_md5_signatures_are_weak(rsa_ca, digest, tmp_path):
    key = new_key(tmp_path, "leaf", kind="rsa")
    csr = openssl("req", "-new", "-key", str(key), "-subj", "/CN=old.example.com", cwd=tmp_path)
    signed = rsa_ca.sign_csr(csr, name=f"old-{digest}", digest=digest)
    cert = x509.load_pem_x509_certificate(signed.read_bytes())
    assert weak_certificate(cert) == f"{digest}WithRSAEncryption"
    with pytest.raises(WeakCryptoError) as refused:
        enforce(weak_certificate(cert), weak_crypto_enabled=False)
    assert refused.value.code == "weak_crypto"
    assert f"{digest}WithRSAEncryption" in refused.value.message
    assert "enable weak-crypto" in refused.value.message
    enforce(weak_certificate(cert), weak_crypto_enabled=True)  # accepted once enabled
    # An import checks the weak signature like any other, with cryptography's own check refusing it.
    request_key = serialization.load_pem_private_key(key.read_bytes(), None).public_key()
    check = dict(request_public_key=request_key, installed_ca=[rsa_ca.certificate], now=datetime.now(UTC))
    with pytest.raises(WeakCryptoError):
        check_identity_import(cert, weak_crypto=False, **check)
    assert check_identity_import(cert, weak_crypto=True, **check).certificate == cert


# --- PKCS#12 files ------------------------------------------------------------------------------

def test_modern_openssl_files_use_aes_and_legacy_ones_rc2_and_3des(operator_ca):
    modern = inspect(operator_ca.pkcs12("modern", "pw").read_bytes())
    assert {p.cipher for p in modern} == {"aes"}
    assert all(weak_cipher(p.cipher, p.algorithm) is None for p in modern)
    legacy = inspect(operator_ca.pkcs12("legacy", "pw", kind="rsa", legacy=True).read_bytes())
    assert {(p.part, p.algorithm) for p in legacy} == {
        ("certificates", "pbeWithSHAAnd40BitRC2-CBC"), ("private key", "pbeWithSHAAnd3-KeyTripleDES-CBC")}
    assert all(weak_cipher(p.cipher, p.algorithm) for p in legacy)


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, b"hello, this is not a PKCS#12 file",
                                  b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_garbage_is_not_pkcs12(data):
    with pytest.raises(ValidationError) as refused:
        inspect(data)
    assert refused.value.code == "invalid_pkcs12" and "PKCS#12" in refused.value.message


def test_a_truncated_file_is_not_pkcs12(operator_ca):
    data = operator_ca.pkcs12("cut", "pw").read_bytes()
    with pytest.raises(ValidationError) as refused:
        inspect(data[: len(data) // 2])
    assert refused.value.code == "invalid_pkcs12"


def test_24_kib_is_the_limit():
    check_size(MAX_PKCS12_BYTES)
    with pytest.raises(ValidationError) as refused:
        check_size(MAX_PKCS12_BYTES + 1)
    assert (refused.value.code, refused.value.status) == ("pkcs12_too_large", 413)
    assert "24 KiB" in refused.value.message


def test_opening_needs_the_right_passphrase_and_orders_the_chain(tmp_path):
    root_key, mid_key, leaf_key = p256(), p256(), p256()
    root = make_cert("Root", root_key, ca=True)
    mid = make_cert("Intermediate", mid_key, issuer=("Root", root_key), ca=True)
    leaf = make_cert("leaf.example.com", leaf_key, issuer=("Intermediate", mid_key))
    stranger = make_cert("Unrelated", p256(), ca=True)
    # The file lists the CA certificates root first and with an unrelated one in between.
    data = serialization.pkcs12.serialize_key_and_certificates(
        b"leaf", leaf_key, leaf, [root, stranger, mid], serialization.BestAvailableEncryption(b"right"))
    with pytest.raises(ValidationError) as refused:
        open_pkcs12(data, "wrong")
    assert refused.value.code == "pkcs12_bad_passphrase"
    assert "correct the passphrase on the enrollment object and re-enroll" in refused.value.message
    opened = open_pkcs12(data, "right")
    assert opened.certificate == leaf and opened.ca_chain == (mid, root, stranger)
    assert issuing_chain(leaf, [stranger]) == [stranger]


def test_an_export_opens_with_openssl_and_is_aes_256_with_pbkdf2(tmp_path):
    ca_key, key = p256(), p256()
    ca = make_cert("Export CA", ca_key, ca=True)
    leaf = make_cert("vpn.example.com", key, issuer=("Export CA", ca_key))
    path = tmp_path / "export.p12"
    path.write_bytes(export_pkcs12(name="vpn", private_key=key, certificate=leaf, ca_chain=[ca],
                                   passphrase="s3cret passphrase"))
    private_key, certificates = read_pkcs12(path, "s3cret passphrase")
    assert "PRIVATE KEY" in private_key and set(certificates) == {leaf, ca}
    info = pkcs12_algorithms(path, "s3cret passphrase")
    assert "AES-256-CBC" in info and "PBKDF2" in info and "sha256" in info.lower()
    with pytest.raises(ValidationError) as refused:
        export_pkcs12(name="vpn", private_key=key, certificate=leaf, ca_chain=[ca], passphrase="")
    assert refused.value.code == "passphrase_required"


# --- the identity certificate an operator imports --------------------------------------------

class ManualTrustpoint:
    """A device key with its CSR, and an operator's CA."""

    def __init__(self) -> None:
        self.key, self.ca_key = p256(), p256()
        self.ca = make_cert("Operator CA", self.ca_key, ca=True)

    def issued(self, key=None, *, by=None, not_before=None, days=30) -> x509.Certificate:
        issuer = by or ("Operator CA", self.ca_key)
        return make_cert("fw.example.com", key or self.key, issuer=issuer, not_before=not_before, days=days)

    def check(self, cert, *, installed=None, supplied=(), weak_crypto=False):
        installed = [self.ca] if installed is None else installed
        return check_identity_import(cert, request_public_key=self.key.public_key(), installed_ca=installed,
                                     supplied_ca=supplied, weak_crypto=weak_crypto, now=NOW)


def test_a_certificate_for_the_csr_key_from_the_trustpoints_ca_is_accepted():
    tp = ManualTrustpoint()
    cert = tp.issued()
    assert tp.check(cert).certificate == cert and tp.check(cert).ca_chain == ()
    accepted = tp.check(cert, installed=[], supplied=[tp.ca])
    assert accepted.ca_chain == (tp.ca,)


@pytest.mark.parametrize("case,code", [
    ("another key", "key_mismatch"),
    ("another CA", "not_issued_by_ca"),
    ("expired", "certificate_expired"),
    ("not yet valid", "certificate_not_yet_valid"),
    ("no CA anywhere", "ca_certificate_required"),
    ("a different CA than installed", "ca_certificate_mismatch"),
    ("a leaf as CA", "not_a_ca_certificate"),
])
def test_refusals_name_their_reason(case, code):
    tp = ManualTrustpoint()
    other_key = p256()
    other_ca = make_cert("Other CA", other_key, ca=True)
    kwargs = {}
    cert = tp.issued()
    if case == "another key":
        cert = tp.issued(p256())
    elif case == "another CA":
        cert = tp.issued(by=("Operator CA", other_key))  # same issuer name, wrong signature
    elif case == "expired":
        cert = tp.issued(not_before=NOW - timedelta(days=40), days=30)
    elif case == "not yet valid":
        cert = tp.issued(not_before=NOW + timedelta(days=1))
    elif case == "no CA anywhere":
        kwargs = {"installed": []}
    elif case == "a different CA than installed":
        kwargs = {"supplied": [other_ca]}
    elif case == "a leaf as CA":
        kwargs = {"installed": [], "supplied": [tp.issued(p256())]}
    with pytest.raises(ValidationError) as refused:
        tp.check(cert, **kwargs)
    assert refused.value.code == code, refused.value.message


def test_an_rsa_1024_certificate_is_refused_until_weak_crypto_is_enabled():
    tp = ManualTrustpoint()
    tp.key = rsa.generate_private_key(65537, 1024)
    cert = tp.issued()
    with pytest.raises(WeakCryptoError) as refused:
        tp.check(cert)
    assert "RSA-1024" in refused.value.message
    assert tp.check(cert, weak_crypto=True).certificate == cert


def test_uploads_in_pem_der_and_with_the_chain_appended():
    tp = ManualTrustpoint()
    cert = tp.issued()
    pem = cert.public_bytes(serialization.Encoding.PEM)
    ca_pem = tp.ca.public_bytes(serialization.Encoding.PEM)
    assert parse_upload(pem) == (cert, [])
    assert parse_upload(cert.public_bytes(serialization.Encoding.DER)) == (cert, [])
    assert parse_upload(pem + ca_pem) == (cert, [tp.ca])
    assert parse_upload(pem, ca_pem) == (cert, [tp.ca])
    with pytest.raises(ValidationError) as refused:
        parse_upload(b"not a certificate")
    assert refused.value.code == "invalid_certificate"


# --- the trustpoint a PKCS#12 file names --------------------------------------------------------

@pytest.mark.parametrize("filename,expected", [
    ("vpn-gateway.p12", "vpn-gateway"), ("VPN_1.pfx", "VPN_1"),
    ("C:\\certs\\edge.example.com.p12", "edge.example.com"),
    ("/tmp/site-a.p12", "site-a"), ("noextension", "noextension"),
])
def test_the_trustpoint_is_named_as_the_file(filename, expected):
    assert trustpoint_name(filename) == expected


@pytest.mark.parametrize("filename", ["my cert.p12", ".p12", "-dash.p12", "x" * 70 + ".p12"])
def test_a_file_name_that_cannot_name_a_trustpoint_is_refused(filename):
    with pytest.raises(ValidationError) as refused:
        trustpoint_name(filename)
    assert refused.value.code == "invalid_name" and "rename the file" in refused.value.message
    assert trustpoint_name(filename, "renamed") == "renamed"


def test_openssl_files_of_both_key_types_open(operator_ca):
    for kind in ("rsa", "ec"):
        path: Path = operator_ca.pkcs12(f"open-{kind}", "pw", kind=kind)
        opened = open_pkcs12(path.read_bytes(), "pw")
        assert opened.ca_chain == (operator_ca.certificate,)
