"""The weak-crypto policy: which algorithms a device refuses until weak-crypto is enabled on it.

One policy for every enrollment type (self-signed and manual key pairs, imported identity and
CA certificates, PKCS#12 files, SCEP). Pure: each check returns the weak algorithm's name, or
``None`` when nothing is weak; :func:`enforce` turns a name into the refusal
(:class:`~shared.errors.WeakCryptoError`, code ``weak_crypto``, whose message tells the
operator to enable weak-crypto).

Weak means: RSA keys below 2048 bits, DSA keys, SHA-1 or MD5 signatures, and DES, 3DES, RC2
or RC4 encryption (the ciphers of legacy PKCS#12 files and old SCEP servers).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, rsa

from shared.errors import WeakCryptoError

#: RSA keys shorter than this are weak.
MIN_RSA_BITS = 2048
#: Signature hashes that are weak.
WEAK_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (hashes.SHA1, hashes.MD5)
#: Symmetric ciphers that are weak, by the short names asn1crypto gives them.
WEAK_CIPHERS = frozenset({"des", "tripledes", "rc2", "rc4"})


def weak_rsa_size(key_size: int) -> str | None:
    """For a key the device is about to generate: "RSA-1024" when it is too short."""
    return f"RSA-{key_size}" if key_size < MIN_RSA_BITS else None


def weak_public_key(public_key: object) -> str | None:
    if isinstance(public_key, rsa.RSAPublicKey):
        return weak_rsa_size(public_key.key_size)
    if isinstance(public_key, dsa.DSAPublicKey):
        return f"DSA-{public_key.key_size}"
    return None


def weak_signature(signed: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    """The signature algorithm's name (e.g. "sha1WithRSAEncryption") when its hash is weak."""
    try:
        digest = signed.signature_hash_algorithm
    except Exception:  # an algorithm cryptography does not know: not ours to call weak
        return None
    if isinstance(digest, WEAK_HASHES):
        oid = signed.signature_algorithm_oid
        return getattr(oid, "_name", None) or oid.dotted_string
    return None


def weak_certificate(cert: x509.Certificate) -> str | None:
    """The first weak thing about a certificate: its key, then its signature."""
    return weak_public_key(cert.public_key()) or weak_signature(cert)


def weak_cipher(cipher: str, name: str) -> str | None:
    """``name`` when ``cipher`` (asn1crypto's short name: "aes", "tripledes", …) is weak."""
    return name if cipher in WEAK_CIPHERS else None


def enforce(weak: str | None, *, weak_crypto_enabled: bool) -> None:
    """Refuse ``weak`` unless the device has weak-crypto enabled."""
    if weak is not None and not weak_crypto_enabled:
        raise WeakCryptoError(weak)
