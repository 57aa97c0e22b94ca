"""The CA bundle a bundle source publishes, and how its receiver checks it. Pure: bytes and a
time in, a checked bundle or a BundleError with a stable code out.

A bundle source answers ``GET /ca-bundle/latest`` with JSON::

    {"manifest": "<base64 of the manifest bytes>", "signature": "<base64 of the signature>"}

The manifest is JSON (UTF-8) with ``format`` (:data:`FORMAT`), ``version`` (an integer that
grows with every publication), ``published_at`` (ISO 8601, UTC), ``sha256`` (hex digest of the
``pem`` text's UTF-8 bytes), ``certificates`` (how many) and ``pem`` (the CA certificates,
concatenated PEM). The signature is made over the manifest bytes exactly as sent, by the
bundle-signing key: ECDSA with SHA-256 (DER-encoded), or RSA PKCS#1 v1.5 with SHA-256. The
receiver pins the bundle-signing certificate, so a bundle changed on the way or on a mirror is
refused whatever TLS said; the hash then ties the certificates to what was signed.

Every certificate must be a CA certificate (basic constraints CA) that is valid now.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

FORMAT = "certfleet-ca-bundle/1"
#: Largest answer a receiver reads: a bundle of a few hundred CA certificates fits well within.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class BundleError(ValueError):
    """A bundle that must not be used; ``code`` says which check refused it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class CaBundle:
    version: int
    published_at: datetime
    sha256: str
    pem: str
    certificates: tuple[x509.Certificate, ...]

    @property
    def label(self) -> str:
        return str(self.version)


def sha256_hex(pem: str) -> str:
    return hashlib.sha256(pem.encode()).hexdigest()


def manifest_bytes(*, version: int, published_at: datetime, pem: str) -> bytes:
    """The manifest for a bundle, as a source signs and serves it."""
    certificates = x509.load_pem_x509_certificates(pem.encode())
    body = {
        "format": FORMAT, "version": version, "published_at": published_at.astimezone(UTC).isoformat(),
        "sha256": sha256_hex(pem), "certificates": len(certificates), "pem": pem,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(manifest: bytes, key) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(manifest, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(manifest, padding.PKCS1v15(), hashes.SHA256())
    raise TypeError(f"a bundle-signing key is ECDSA or RSA, not {type(key).__name__}")


def answer(manifest: bytes, signature: bytes) -> bytes:
    """The body of ``GET /ca-bundle/latest``."""
    return json.dumps({"manifest": base64.b64encode(manifest).decode(),
                       "signature": base64.b64encode(signature).decode()}).encode()


def read_answer(body: bytes, *, signer: x509.Certificate, now: datetime) -> CaBundle:
    """Check a source's answer against the pinned bundle-signing certificate; BundleError if any
    check fails (codes: bundle_unreadable, bundle_signature_invalid, bundle_hash_mismatch,
    bundle_certificate_invalid, bundle_certificate_not_ca, bundle_certificate_expired)."""
    if len(body) > MAX_ANSWER_BYTES:
        raise BundleError("bundle_unreadable", f"the bundle source's answer is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        outer = json.loads(body)
        manifest = base64.b64decode(outer["manifest"], validate=True)
        signature = base64.b64decode(outer["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BundleError("bundle_unreadable", "the bundle source's answer is not a signed CA bundle "
                                               f"(JSON with base64 manifest and signature): {exc}") from None
    _verify_signature(manifest, signature, signer)
    try:
        fields = json.loads(manifest)
        if fields.get("format") != FORMAT:
            raise ValueError(f"format {fields.get('format')!r}, expected {FORMAT}")
        version, pem, digest = int(fields["version"]), str(fields["pem"]), str(fields["sha256"])
        published_at = datetime.fromisoformat(fields["published_at"]).astimezone(UTC)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError("bundle_unreadable", f"the bundle manifest is not readable: {exc}") from None
    if sha256_hex(pem) != digest.lower():
        raise BundleError("bundle_hash_mismatch",
                          "the bundle's certificates do not match the SHA-256 its manifest gives")
    return CaBundle(version=version, published_at=published_at, sha256=digest.lower(), pem=pem,
                    certificates=check_certificates(pem, now=now))


def _verify_signature(manifest: bytes, signature: bytes, signer: x509.Certificate) -> None:
    key = signer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, manifest, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, manifest, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise InvalidSignature
    except InvalidSignature:
        raise BundleError("bundle_signature_invalid",
                          "the bundle manifest's signature does not verify with the bundle-signing certificate "
                          f"{signer.subject.rfc4514_string()}: it was changed, or signed by another key") from None


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """Whether the certificate's basic constraints say CA:TRUE (no extension: not a CA)."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def check_certificates(pem: str, *, now: datetime) -> tuple[x509.Certificate, ...]:
    """The bundle's certificates, each a CA certificate valid at ``now``."""
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise BundleError("bundle_certificate_invalid", f"the bundle holds a certificate that does not parse: {exc}") \
            from None
    for cert in certificates:
        subject = cert.subject.rfc4514_string()
        if not is_ca_certificate(cert):
            raise BundleError("bundle_certificate_not_ca", f"the bundle holds {subject}, which is not a CA certificate")
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise BundleError("bundle_certificate_expired",
                              f"the bundle holds {subject}, valid only from {cert.not_valid_before_utc:%Y-%m-%d} "
                              f"to {cert.not_valid_after_utc:%Y-%m-%d}")
    return tuple(certificates)


def pem_of(certificates: list[x509.Certificate]) -> str:
    return "".join(cert.public_bytes(serialization.Encoding.PEM).decode() for cert in certificates)
