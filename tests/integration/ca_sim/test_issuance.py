"""What the CA simulator issues: profiles, extensions, and pkilint/openssl on the results.
Pure issuance over a P-256 CA built in memory, plus the CA kept in a state directory."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.ca_sim import issuance
from services.ca_sim.authority import ensure_tls_certificate, load_authority
from services.ca_sim.profiles import (
    DEFAULT,
    IPSEC_END_SYSTEM,
    IPSEC_IKE_INTERMEDIATE,
    PROFILES,
    CertificateProfile,
    get_profile,
)
from services.device_sim.ca_client.ipsec_eku import check_ipsec_eku
from shared.errors import ConfigurationError, NotFoundError, ValidationError
from tests.support.ca_peers import lint, openssl_verify, p256_csr, spki, write_pem

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca():
    root_key = ec.generate_private_key(ec.SECP256R1())
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    root = issuance.build_root(root_key, now=NOW)
    issuing = issuance.build_issuing(issuing_key, root=root, root_key=root_key, now=NOW)
    return root, issuing, issuing_key


def issue(ca, csr, profile=DEFAULT, now=NOW):
    _, issuing, key = ca
    return issuance.issue_from_request(csr, profile, issuer=issuing, issuer_key=key, now=now)


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


# --- profiles ------------------------------------------------------------------------------

def test_profiles_are_validated_and_immutable():
    with pytest.raises(ValueError, match="validity"):
        CertificateProfile(label="x", description="", validity_days=0)
    with pytest.raises(ValueError, match="signature hash"):
        CertificateProfile(label="x", description="", signature_hash="md5")
    with pytest.raises(ValueError, match="label"):
        CertificateProfile(label="a/b", description="")
    with pytest.raises(ValueError, match="key usage"):
        CertificateProfile(label="x", description="", key_usage=frozenset({"key_cert_sign"}))
    with pytest.raises(TypeError):
        CertificateProfile(label="x", description="", extended_key_usage=("1.2.3",))
    with pytest.raises(AttributeError):
        DEFAULT.validity_days = 5  # type: ignore[misc]


def test_unknown_label_names_the_known_ones():
    assert get_profile(None) is DEFAULT and get_profile("") is DEFAULT
    with pytest.raises(NotFoundError, match="ms2012-ipsec") as err:
        get_profile("nope")
    assert err.value.code == "unknown_profile"


def test_profile_sets_validity_eku_and_hash(ca):
    _, csr = p256_csr("fw1.example.net")
    ipsec = issue(ca, csr, PROFILES["ms2012-ipsec"])
    assert ipsec.not_valid_after_utc - ipsec.not_valid_before_utc == timedelta(days=730, minutes=5)
    assert list(ext(ipsec, x509.ExtendedKeyUsage).value) == [IPSEC_IKE_INTERMEDIATE]
    assert ipsec.signature_hash_algorithm.name == "sha256"
    ios = issue(ca, csr, PROFILES["ios"])
    with pytest.raises(x509.ExtensionNotFound):
        ext(ios, x509.ExtendedKeyUsage)


def test_a_validity_in_seconds_replaces_the_profiles_and_keeps_the_certificate_mostly_ahead(ca):
    _, issuing, key = ca
    _, csr = p256_csr("fw1.example.net")
    short = issuance.issue_from_request(csr, PROFILES["ms2012-ipsec"], issuer=issuing, issuer_key=key, now=NOW,
                                        validity=timedelta(seconds=40))
    assert short.not_valid_after_utc == NOW + timedelta(seconds=40)
    # Backdated by a tenth of its life, not by five minutes: most of it is still ahead when issued.
    assert short.not_valid_before_utc == NOW - timedelta(seconds=4)
    # A long validity keeps the five minutes' allowance for lagging device clocks.
    long = issuance.issue_from_request(csr, DEFAULT, issuer=issuing, issuer_key=key, now=NOW,
                                       validity=timedelta(days=2))
    assert (long.not_valid_before_utc, long.not_valid_after_utc) == (NOW - timedelta(minutes=5),
                                                                     NOW + timedelta(days=2))


def test_the_device_refuses_the_ms2012_ipsec_certificate_with_the_remedy(ca):
    _, csr = p256_csr("fw1.example.net")
    problem = check_ipsec_eku(issue(ca, csr, PROFILES["ms2012-ipsec"]))
    assert problem is not None
    assert "IP security IKE intermediate" in problem and "1.3.6.1.5.5.8.2.2" in problem
    assert "Duplicate the IPsec (Offline Request) template".lower() in problem.lower()
    assert "Extensions > Application policies" in problem and "IP security end system" in problem
    # The remedy's template, a certificate without EKU and a TLS one are all fine for IPsec.
    assert check_ipsec_eku(issue(ca, csr, PROFILES["ms2012-endsystem"])) is None
    assert list(ext(issue(ca, csr, PROFILES["ms2012-endsystem"]), x509.ExtendedKeyUsage).value) == [
        IPSEC_END_SYSTEM
    ]
    assert check_ipsec_eku(issue(ca, csr, PROFILES["ios"])) is None
    assert check_ipsec_eku(issue(ca, csr)) is None


# --- what a certificate carries ------------------------------------------------------------

def test_issued_certificate_carries_requested_key_subject_and_sans(ca):
    key, csr = p256_csr("fw2.example.net", sans=["fw2.example.net"])
    cert = issue(ca, csr)
    assert spki(cert.public_key()) == spki(key.public_key())
    assert cert.subject == csr.subject
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fw2.example.net"]
    assert not ext(cert, x509.SubjectAlternativeName).critical
    assert cert.issuer == ca[1].subject


def test_serials_are_random_positive_and_at_most_20_octets(ca):
    _, csr = p256_csr("fw3")
    serials = {issue(ca, csr).serial_number for _ in range(20)}
    assert len(serials) == 20
    assert all(0 < s and s.bit_length() <= 159 for s in serials)
    assert max(s.bit_length() for s in serials) >= 64


def test_key_usage_fits_the_key_type(ca):
    _, ec_csr = p256_csr("ec")
    ku = ext(issue(ca, ec_csr), x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_encipherment
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _, rsa_csr = p256_csr("rsa", key=rsa_key)
    ku = ext(issue(ca, rsa_csr), x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment


def test_ski_and_aki_chain_up(ca):
    root, issuing, _ = ca
    _, csr = p256_csr("fw4")
    cert = issue(ca, csr)
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(issuing, x509.SubjectKeyIdentifier).value.digest
    assert ext(issuing, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(root, x509.SubjectKeyIdentifier).value.digest
    assert ext(issuing, x509.BasicConstraints).value.path_length == 0


def test_empty_subject_needs_a_san_which_is_then_critical(ca):
    _, csr = p256_csr("", sans=["fw5.example.net"], subject=x509.Name([]))
    cert = issue(ca, csr)
    assert len(cert.subject) == 0 and ext(cert, x509.SubjectAlternativeName).critical
    _, bare = p256_csr("", subject=x509.Name([]))
    with pytest.raises(ValidationError) as err:
        issue(ca, bare)
    assert err.value.code == "empty_subject"


def test_validity_never_outlives_the_issuing_ca(ca):
    _, csr = p256_csr("fw6")
    late = issue(ca, csr, PROFILES["ms2012-ipsec"], now=ca[1].not_valid_after_utc - timedelta(days=10))
    assert late.not_valid_after_utc == ca[1].not_valid_after_utc


def test_unsupported_request_keys_are_refused(ca):
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    issue(ca, p256_csr("ok", key=small)[1])  # 1024 bits: the device offers it, the CA signs it
    _, csr = p256_csr("k1", key=ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(ValidationError, match="secp256k1") as err:
        issue(ca, csr)
    assert err.value.code == "unsupported_key"


# --- real checkers --------------------------------------------------------------------------

def test_issued_and_ca_certificates_lint_clean_and_verify(ca, tmp_path):
    """pkilint (RFC 5280) reports nothing at WARNING and above; openssl verifies the chain."""
    root, issuing, _ = ca
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certs = {
        "root": root,
        "issuing": issuing,
        "ec-default": issue(ca, p256_csr("fw7.example.net", sans=["fw7.example.net"])[1]),
        "rsa-default": issue(ca, p256_csr("fw8.example.net", key=rsa_key)[1]),
        "empty-subject": issue(ca, p256_csr("", sans=["fw9.example.net"], subject=x509.Name([]))[1]),
        **{label: issue(ca, p256_csr(f"fw-{label}")[1], profile) for label, profile in PROFILES.items()},
        "bundle-signer": issuance.build_bundle_signer(ec.generate_private_key(ec.SECP256R1()).public_key(),
                                                      issuer=issuing, issuer_key=ca[2], now=NOW),
    }
    root_file = write_pem(tmp_path / "root.pem", root)
    issuing_file = write_pem(tmp_path / "issuing.pem", issuing)
    findings = {}
    for name, cert in certs.items():
        path = write_pem(tmp_path / f"{name}.pem", cert)
        if found := lint(path):
            findings[name] = found
        if name not in ("root", "issuing"):
            openssl_verify(path, root=root_file, untrusted=issuing_file)
    assert findings == {}


# --- the CA in its state directory ----------------------------------------------------------

def test_state_dir_keeps_the_ca_with_private_keys_0600(tmp_path):
    ca = load_authority(tmp_path / "s", key_type="ecdsa")
    assert load_authority(tmp_path / "s") is ca  # loaded once per process
    paths = ca.paths
    for key_file in (paths.root_key, paths.issuing_key):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    chain = x509.load_pem_x509_certificates(paths.chain.read_bytes())
    assert chain == [ca.issuing, ca.root]
    assert x509.load_pem_x509_certificate(paths.tls_ca.read_bytes()) == ca.root
    assert isinstance(ca.issuing_key, ec.EllipticCurvePrivateKey)
    with pytest.raises(ConfigurationError, match="already holds a ecdsa CA"):
        load_authority(tmp_path / "s", key_type="rsa")


def test_tls_certificate_names_loopback_and_is_reused(tmp_path):
    ca = load_authority(tmp_path / "s", key_type="ecdsa")
    cert_file, key_file = ensure_tls_certificate(ca)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    server, issuing = x509.load_pem_x509_certificates(cert_file.read_bytes())
    assert issuing == ca.issuing
    san = ext(server, x509.SubjectAlternativeName).value
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert list(ext(server, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    before = cert_file.read_bytes()
    ensure_tls_certificate(ca)
    assert cert_file.read_bytes() == before
    # Listening on another address: the certificate is re-issued to name it as well.
    ensure_tls_certificate(ca, extra_names=("127.0.0.2",))
    server = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    assert "127.0.0.2" in {str(a) for a in
                           ext(server, x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)}


def test_issued_by_us_accepts_only_our_current_end_entity_certificates(tmp_path):
    ca = load_authority(tmp_path / "s", key_type="ecdsa")
    key, csr = p256_csr("fw-renew")
    assert ca.issued_by_us(ca.issue(csr, DEFAULT)) is None
    expired = ca.issue(csr, DEFAULT, now=datetime.now(UTC) - timedelta(days=400))
    assert "expired" in ca.issued_by_us(expired)
    now = datetime.now(UTC)
    sub_ca = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.issuing.subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca.issuing_key, hashes.SHA256()))
    assert "is a CA certificate" in ca.issued_by_us(sub_ca)
    other = load_authority(tmp_path / "other", key_type="ecdsa")
    assert "not issued by this CA" in ca.issued_by_us(other.issue(csr, DEFAULT))


def test_a_serial_already_recorded_is_never_handed_out_again(tmp_path, monkeypatch):
    """Serials are random; should one come up twice (in this server process or another on the
    state directory), the request is signed again under a new one."""
    ca = load_authority(tmp_path / "s", key_type="ecdsa")
    first = ca.issue(p256_csr("fw-first")[1], DEFAULT)
    serials = iter([first.serial_number, first.serial_number + 1])
    monkeypatch.setattr(issuance.x509, "random_serial_number", lambda: next(serials))
    second = ca.issue(p256_csr("fw-second")[1], DEFAULT)
    assert second.serial_number == first.serial_number + 1
    assert ca.ledger.lookup(first.serial_number).subject == first.subject.rfc4514_string()
    assert ca.ledger.lookup(second.serial_number).subject == second.subject.rfc4514_string()


def test_an_rsa_tls_certificate_left_by_an_older_version_is_replaced_by_a_p256_one(tmp_path):
    ca = load_authority(tmp_path / "s")  # RSA
    cert_file, key_file = ensure_tls_certificate(ca)
    server = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)
    # As versions before the P-256 TLS key left it: the CA's key type.
    old_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    old = issuance.build_tls_server(old_key.public_key(), names=["127.0.0.1", "::1", "localhost"], issuer=ca.issuing,
                                    issuer_key=ca.issuing_key, now=datetime.now(UTC))
    write_pem(cert_file, old, ca.issuing)
    write_pem(key_file, old_key)
    ensure_tls_certificate(ca)
    server = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey) and server.public_key().curve.key_size == 256
