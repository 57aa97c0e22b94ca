"""The CA simulator's certificate authority: a root and an issuing CA kept in a state directory.

Layout of ``DIR`` (private keys PEM with mode 0600)::

    DIR/ca/root.pem, root.key         the root CA (its key is read only to create the issuing CA)
    DIR/ca/issuing.pem, issuing.key   the issuing CA, which signs everything else
    DIR/ca/est-tls.pem, est-tls.key   the EST server's TLS certificate (then the issuing CA) and its P-256 key
    DIR/ca-chain.pem                  issuing CA, then root: what enrolled devices install
    DIR/tls-ca.pem                    the trust anchor of the HTTPS endpoints (the root)
    DIR/ca/bundle-signing.key         the P-256 key that signs the CA bundles it publishes
    DIR/bundle-signing.pem            its certificate (issued by the root), which receivers pin
    DIR/ca/bundles/                   the published CA bundles (see :mod:`.bundle_store`)
    DIR/ca/ledger.sqlite              what the issuing CA signed and revoked (see :mod:`.ledger`)
    DIR/ca/ocsp-signer.key            the OCSP responder's delegated signing key
    DIR/ocsp-signer.pem               its certificate (issued by the issuing CA, id-kp-OCSPSigning)

Created on first start and reused afterwards, so a restart keeps the same CA. Loading an RSA
key costs ~40 ms, so :func:`load_authority` keeps each directory's CA for the whole process.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.ca_sim import issuance
from services.ca_sim.issuance import RevocationUrls
from services.ca_sim.ledger import Ledger
from services.ca_sim.profiles import CertificateProfile
from shared.clock import utcnow
from shared.enums import KeyType
from shared.errors import ConfigurationError, ConflictError, NotFoundError
from shared.pki import PrivateKey, generate_private_key

#: The CA's key for each key type the CLI offers.
CA_KEYS = {KeyType.RSA: (KeyType.RSA, 2048), KeyType.ECDSA: (KeyType.ECDSA, 256)}
#: A TLS certificate closer than this to its end is replaced at start.
TLS_RENEW_BEFORE = timedelta(days=30)
#: The HTTPS servers' key, whatever the CA's: every handshake signs with it, and a P-256
#: signature costs a fraction of an RSA-2048 one (about 15 % of the CA's CPU per EST enrollment
#: with an RSA CA). The CA's own key still signs the certificate.
TLS_KEY = (KeyType.ECDSA, 256)
#: Names the EST server's certificate always covers.
TLS_NAMES = ("127.0.0.1", "::1", "localhost")
#: The OCSP signing certificate is short-lived (it cannot be revoked: id-pkix-ocsp-nocheck) and
#: replaced when less than a third of its life is left.
OCSP_SIGNER_VALIDITY = timedelta(days=30)
OCSP_SIGNER_RENEW_BEFORE = timedelta(days=10)
#: Signatures tried before giving up on finding a serial not yet used (one is all it ever takes).
SERIAL_ATTEMPTS = 3


@dataclass(frozen=True)
class CaPaths:
    """Where each file of the CA lives in a state directory."""

    state_dir: Path

    @property
    def ca_dir(self) -> Path:
        return self.state_dir / "ca"

    @property
    def root_pem(self) -> Path:
        return self.ca_dir / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.ca_dir / "root.key"

    @property
    def issuing_pem(self) -> Path:
        return self.ca_dir / "issuing.pem"

    @property
    def issuing_key(self) -> Path:
        return self.ca_dir / "issuing.key"

    @property
    def est_tls_pem(self) -> Path:
        return self.ca_dir / "est-tls.pem"

    @property
    def est_tls_key(self) -> Path:
        return self.ca_dir / "est-tls.key"

    @property
    def bundle_signing_key(self) -> Path:
        return self.ca_dir / "bundle-signing.key"

    @property
    def bundle_signing_pem(self) -> Path:
        return self.state_dir / "bundle-signing.pem"

    @property
    def bundles_dir(self) -> Path:
        return self.ca_dir / "bundles"

    @property
    def ledger_db(self) -> Path:
        return self.ca_dir / "ledger.sqlite"

    @property
    def ocsp_signer_key(self) -> Path:
        return self.ca_dir / "ocsp-signer.key"

    @property
    def ocsp_signer_pem(self) -> Path:
        return self.state_dir / "ocsp-signer.pem"

    @property
    def requests_db(self) -> Path:
        return self.ca_dir / "requests.sqlite"

    @property
    def chain(self) -> Path:
        return self.state_dir / "ca-chain.pem"

    @property
    def tls_ca(self) -> Path:
        return self.state_dir / "tls-ca.pem"

    @property
    def admin_token(self) -> Path:
        return self.state_dir / "admin-token"


@dataclass(frozen=True)
class CertificateAuthority:
    """The issuing CA with its key in memory, and the root above it."""

    root: x509.Certificate
    issuing: x509.Certificate
    issuing_key: PrivateKey
    paths: CaPaths
    #: How long issued end-entity certificates last, instead of their profile's days (None: the
    #: profile's). Short ones let renewal be watched in tests and demos.
    validity: timedelta | None = None
    #: Where issued end-entity certificates point relying parties for revocation (None: nowhere,
    #: when the CA serves no CRL and OCSP).
    revocation_urls: RevocationUrls | None = None
    #: What the issuing CA signed and revoked; every issued certificate is recorded in it.
    ledger: Ledger | None = field(default=None, repr=False, compare=False)

    @property
    def key_type(self) -> KeyType:
        return KeyType.RSA if isinstance(self.issuing_key, rsa.RSAPrivateKey) else KeyType.ECDSA

    def chain(self) -> list[x509.Certificate]:
        """Issuing CA, then root: what ``/cacerts`` serves and devices install."""
        return [self.issuing, self.root]

    def issue(self, csr: x509.CertificateSigningRequest, profile: CertificateProfile, *,
              now: datetime | None = None, record: bool = True) -> x509.Certificate:
        """Sign a request; recorded in the ledger unless ``record`` is False (a dry run whose
        certificate is never handed out). Serials are random (159 bits); should one ever be
        recorded already, by this process or another on the state directory, the request is
        signed again under a new one, so no two certificates share a serial."""
        now = now or utcnow()
        for _ in range(SERIAL_ATTEMPTS):
            cert = issuance.issue_from_request(
                csr, profile, issuer=self.issuing, issuer_key=self.issuing_key, now=now,
                validity=self.validity, revocation=self.revocation_urls,
            )
            if not record or self.record(cert, kind="end-entity", profile=profile.label, now=now):
                return cert
        raise RuntimeError(f"{SERIAL_ATTEMPTS} random serials in a row were taken: the random source is broken")

    def record(self, cert: x509.Certificate, *, kind: str, profile: str | None = None,
               now: datetime | None = None) -> bool:
        """Record what the issuing CA signed; False when the serial was recorded already."""
        if self.ledger is None:
            return True
        return self.ledger.record(cert, kind=kind, profile=profile, now=now)

    def supersede(self, old_serial: int, *, same_key: bool, profile: CertificateProfile,
                  now: datetime | None = None) -> bool:
        """After a re-enrollment: revoke the certificate it replaces (reason superseded) when
        the profile says so and the device moved to a new key. True when it was revoked."""
        if not profile.revoke_superseded or same_key or self.ledger is None:
            return False
        try:
            _, changed = self.ledger.revoke(old_serial, reason="superseded", now=now)
        except (NotFoundError, ConflictError):  # never recorded here, or revoked already: leave it
            return False
        return changed

    def issued_by_us(self, cert: x509.Certificate, *, now: datetime | None = None) -> str | None:
        """None when ``cert`` is an unexpired end-entity certificate of our issuing CA, else why not."""
        now = now or utcnow()
        try:
            cert.verify_directly_issued_by(self.issuing)
        except (InvalidSignature, ValueError, TypeError):
            return f"the certificate {cert.subject.rfc4514_string()} was not issued by this CA"
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return f"the certificate {cert.subject.rfc4514_string()} has expired or is not valid yet"
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return f"the certificate {cert.subject.rfc4514_string()} is a CA certificate"
        except x509.ExtensionNotFound:
            pass
        return None


# --- the state directory ------------------------------------------------------------------

def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, atomically (no moment with looser permissions)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _load_key(path: Path) -> PrivateKey:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)  # type: ignore[return-value]


@contextmanager
def _locked(paths: CaPaths, name: str = ".lock") -> Iterator[None]:
    """Serialise work between processes sharing a state directory: creation of the CA's files
    (the default lock), or what ``name`` stands for."""
    paths.ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(paths.ca_dir / name, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _create(paths: CaPaths, key_type: KeyType, now: datetime) -> None:
    kt, size = CA_KEYS[key_type]
    root_key = generate_private_key(kt, size)
    issuing_key = generate_private_key(kt, size)
    root = issuance.build_root(root_key, now=now)
    issuing = issuance.build_issuing(issuing_key, root=root, root_key=root_key, now=now)
    _write_private(paths.root_key, _key_pem(root_key))
    _write_private(paths.issuing_key, _key_pem(issuing_key))
    _write_public(paths.root_pem, _cert_pem(root))
    # The issuing certificate last: its presence marks a complete CA.
    _write_public(paths.issuing_pem, _cert_pem(issuing))


def _key_type_of(cert: x509.Certificate) -> KeyType:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return KeyType.RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        return KeyType.ECDSA
    raise ConfigurationError(f"the CA in {cert.subject.rfc4514_string()} has an unsupported key")


_loaded: dict[Path, CertificateAuthority] = {}
_loaded_lock = threading.Lock()


def load_authority(state_dir: Path | str, *, key_type: KeyType | str | None = None,
                   now: datetime | None = None) -> CertificateAuthority:
    """The CA kept in ``state_dir``, created there on first use (RSA-2048 unless ``key_type``
    says ``ecdsa``). A ``key_type`` that contradicts an existing CA is a configuration error:
    silently making a new CA would break every certificate already issued."""
    paths = CaPaths(Path(state_dir).resolve())
    wanted = KeyType(key_type) if key_type else None
    if wanted is not None and wanted not in CA_KEYS:
        raise ConfigurationError(f"the CA key type must be rsa or ecdsa, not {wanted.value}")
    with _loaded_lock:
        ca = _loaded.get(paths.state_dir)
        if ca is None:
            with _locked(paths):
                if not paths.issuing_pem.exists():
                    _create(paths, wanted or KeyType.RSA, now or utcnow())
                root = x509.load_pem_x509_certificate(paths.root_pem.read_bytes())
                issuing = x509.load_pem_x509_certificate(paths.issuing_pem.read_bytes())
                ca = CertificateAuthority(root, issuing, _load_key(paths.issuing_key), paths,
                                          ledger=Ledger(paths.ledger_db))
                _write_public(paths.chain, _cert_pem(issuing, root))
                _write_public(paths.tls_ca, _cert_pem(root))
            _loaded[paths.state_dir] = ca
    if wanted is not None and _key_type_of(ca.issuing) is not wanted:
        raise ConfigurationError(
            f"{paths.state_dir} already holds a {_key_type_of(ca.issuing).value} CA; drop --key-type "
            f"or use another state directory for a {wanted.value} CA"
        )
    return ca


def ensure_tls_certificate(ca: CertificateAuthority, *, extra_names: tuple[str, ...] = (),
                           now: datetime | None = None) -> tuple[Path, Path]:
    """The EST server's certificate and key files (chain: server, issuing CA), reused while
    they cover the names, stay valid for another month and hold a P-256 key, else issued anew."""
    now = now or utcnow()
    paths = ca.paths
    names = list(dict.fromkeys((*TLS_NAMES, *extra_names)))
    with _locked(paths):
        if paths.est_tls_pem.exists() and paths.est_tls_key.exists():
            current = x509.load_pem_x509_certificate(paths.est_tls_pem.read_bytes())
            if (_covers(current, names) and current.not_valid_after_utc - now > TLS_RENEW_BEFORE
                    and current.issuer == ca.issuing.subject and _is_tls_key(current.public_key())):
                return paths.est_tls_pem, paths.est_tls_key
        key = generate_private_key(*TLS_KEY)
        cert = issuance.build_tls_server(
            key.public_key(), names=names, issuer=ca.issuing, issuer_key=ca.issuing_key, now=now
        )
        ca.record(cert, kind="tls-server", now=now)
        _write_private(paths.est_tls_key, _key_pem(key))
        _write_public(paths.est_tls_pem, _cert_pem(cert, ca.issuing))
    return paths.est_tls_pem, paths.est_tls_key


def ensure_ocsp_signer(ca: CertificateAuthority, *, now: datetime | None = None
                       ) -> tuple[x509.Certificate, PrivateKey]:
    """The OCSP responder's delegated signing certificate and key (the CA's key type), reused
    while it has more than ``OCSP_SIGNER_RENEW_BEFORE`` left, else issued anew."""
    now = now or utcnow()
    paths = ca.paths
    with _locked(paths):
        if paths.ocsp_signer_pem.exists() and paths.ocsp_signer_key.exists():
            current = x509.load_pem_x509_certificate(paths.ocsp_signer_pem.read_bytes())
            if current.issuer == ca.issuing.subject and current.not_valid_after_utc - now > OCSP_SIGNER_RENEW_BEFORE:
                return current, _load_key(paths.ocsp_signer_key)
        kt, size = CA_KEYS[ca.key_type]
        key = generate_private_key(kt, size)
        cert = issuance.build_ocsp_signer(key.public_key(), issuer=ca.issuing, issuer_key=ca.issuing_key, now=now,
                                          validity=OCSP_SIGNER_VALIDITY)
        ca.record(cert, kind="ocsp-signer", now=now)
        _write_private(paths.ocsp_signer_key, _key_pem(key))
        # The certificate last: its presence marks a complete signer.
        _write_public(paths.ocsp_signer_pem, _cert_pem(cert))
    return cert, key


def ensure_bundle_signer(ca: CertificateAuthority, *, now: datetime | None = None
                         ) -> tuple[x509.Certificate, PrivateKey]:
    """The bundle-signing certificate and key, made once (P-256, issued by the root) and kept:
    receivers pin the certificate, so it must not change under them."""
    paths = ca.paths
    with _locked(paths):
        if not (paths.bundle_signing_pem.exists() and paths.bundle_signing_key.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = issuance.build_bundle_signer(key.public_key(), issuer=ca.root, issuer_key=_load_key(paths.root_key),
                                                now=now or utcnow())
            _write_private(paths.bundle_signing_key, _key_pem(key))
            # The certificate last: its presence marks a complete signer.
            _write_public(paths.bundle_signing_pem, _cert_pem(cert))
        cert = x509.load_pem_x509_certificate(paths.bundle_signing_pem.read_bytes())
        return cert, _load_key(paths.bundle_signing_key)


def _is_tls_key(public_key) -> bool:
    return isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.key_size == TLS_KEY[1]


def _covers(cert: x509.Certificate, names: list[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    present |= set(san.get_values_for_type(x509.DNSName))
    return all(_canonical(n) in present for n in names)


def _canonical(name: str) -> str:
    try:
        return str(ip_address(name))
    except ValueError:
        return name
