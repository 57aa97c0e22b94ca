"""Who speaks SCEP for the CA: the issuing CA itself, or a registration authority (RA).

Requests are encrypted to, and CertReps signed by, an RSA key (SCEP's key transport is RSA).
With an RSA issuing CA that is the CA; with an RA configured, or with an ECDSA CA (which
cannot do it), an RA certificate issued by the issuing CA does it, kept beside the CA::

    DIR/ca/scep-ra.pem, scep-ra.key    the RA (RSA-2048; key PEM mode 0600)

GetCACert answers a degenerate certificates-only SignedData (application/x-x509-ca-ra-cert,
RFC 8894 4.2.1.2): the issuing CA, which is an intermediate, and the root above it, so that a
client can build the chain; and the RA when there is one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from services.ca_sim.authority import (
    CertificateAuthority,
    _cert_pem,
    _key_pem,
    _load_key,
    _locked,
    _write_private,
    _write_public,
)
from shared.clock import utcnow
from shared.pki import generate_private_key
from shared.protocols.scep import Responder

RA_VALIDITY = timedelta(days=2 * 365)
RA_RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class ScepIdentity:
    responder: Responder
    #: The issuing CA, then each issuer up to the root.
    chain: tuple[x509.Certificate, ...]
    #: The RA that speaks for the CA, if any.
    ra: x509.Certificate | None = None

    @property
    def ca_certs(self) -> tuple[x509.Certificate, ...]:
        """What GetCACert answers, RA first."""
        return (self.ra, *self.chain) if self.ra is not None else self.chain


def _ra_files(ca: CertificateAuthority) -> tuple[Path, Path]:
    return ca.paths.ca_dir / "scep-ra.pem", ca.paths.ca_dir / "scep-ra.key"


def _build_ra(key: rsa.RSAPrivateKey, ca: CertificateAuthority, now: datetime) -> x509.Certificate:
    issuer_ski = ca.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet CA simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, "certfleet SCEP RA"),
        ]))
        .issuer_name(ca.issuing.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + RA_VALIDITY, ca.issuing.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
        .sign(ca.issuing_key, hashes.SHA256())
    )


def _load_or_create_ra(ca: CertificateAuthority, now: datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert_file, key_file = _ra_files(ca)
    with _locked(ca.paths):
        if cert_file.exists() and key_file.exists():
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            if cert.issuer == ca.issuing.subject and cert.not_valid_after_utc - now > RA_RENEW_BEFORE:
                key = _load_key(key_file)
                if isinstance(key, rsa.RSAPrivateKey):
                    return cert, key
        key = generate_private_key("rsa", 2048)
        assert isinstance(key, rsa.RSAPrivateKey)
        cert = _build_ra(key, ca, now)
        ca.record(cert, kind="scep-ra", now=now)
        _write_private(key_file, _key_pem(key))
        _write_public(cert_file, _cert_pem(cert))
    return cert, key


_loaded: dict[tuple[Path, bool], ScepIdentity] = {}
_loaded_lock = threading.Lock()


def load_identity(ca: CertificateAuthority, *, ra: bool = False, now: datetime | None = None) -> ScepIdentity:
    """The SCEP identity of ``ca``: an RA when asked for or when the CA's key is not RSA.
    Loaded once per process (reading an RSA key costs as much as making one)."""
    use_ra = ra or not isinstance(ca.issuing_key, rsa.RSAPrivateKey)
    with _loaded_lock:
        identity = _loaded.get((ca.paths.state_dir, use_ra))
        if identity is None:
            if use_ra:
                cert, key = _load_or_create_ra(ca, now or utcnow())
                identity = ScepIdentity(Responder(key=key, cert=cert), (ca.issuing, ca.root), ra=cert)
            else:
                assert isinstance(ca.issuing_key, rsa.RSAPrivateKey)
                identity = ScepIdentity(Responder(key=ca.issuing_key, cert=ca.issuing), (ca.issuing, ca.root))
            _loaded[(ca.paths.state_dir, use_ra)] = identity
    return identity

