"""PKCS#12 files: checking an upload's structure, opening it with its passphrase, and making
the passphrase-protected export. Pure functions over bytes and ``cryptography`` objects.

The structure (and the algorithms that protect the contents) is read with asn1crypto,
without the passphrase: the controller refuses garbage before storing anything, and the
device refuses weak encryption (3DES, RC2, …) before it decrypts anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asn1crypto import algos
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from shared.chains import issuing_chain
from shared.errors import ValidationError

#: The largest PKCS#12 file accepted, 24 KiB: a key and a chain of a few certificates fit many
#: times over.
MAX_PKCS12_BYTES = 24 * 1024
#: PBKDF2 iterations of an export: slow enough for guessing, fast enough for an operator.
EXPORT_KDF_ROUNDS = 50_000

#: Readable names of the PKCS#12 password-based ciphers (RFC 7292 appendix C), as openssl says them.
_PBE_NAMES = {
    "pkcs12_sha1_rc4_128": "pbeWithSHAAnd128BitRC4",
    "pkcs12_sha1_rc4_40": "pbeWithSHAAnd40BitRC4",
    "pkcs12_sha1_tripledes_3key": "pbeWithSHAAnd3-KeyTripleDES-CBC",
    "pkcs12_sha1_tripledes_2key": "pbeWithSHAAnd2-KeyTripleDES-CBC",
    "pkcs12_sha1_rc2_128": "pbeWithSHAAnd128BitRC2-CBC",
    "pkcs12_sha1_rc2_40": "pbeWithSHAAnd40BitRC2-CBC",
    "pbes1_md5_des": "pbeWithMD5AndDES-CBC",
    "pbes1_sha1_des": "pbeWithSHA1AndDES-CBC",
    "pbes1_md5_rc2": "pbeWithMD5AndRC2-CBC",
    "pbes1_sha1_rc2": "pbeWithSHA1AndRC2-CBC",
}


@dataclass(frozen=True, kw_only=True)
class Protection:
    """How one part of the file (the key, or the certificates) is encrypted."""

    #: What it protects: "private key" or "certificates".
    part: str
    #: A readable algorithm name, e.g. "PBES2 aes256_cbc" or "pbeWithSHAAnd3-KeyTripleDES-CBC".
    algorithm: str
    #: asn1crypto's short cipher name: "aes", "tripledes", "rc2", "des", "rc4".
    cipher: str


@dataclass(frozen=True, kw_only=True)
class Opened:
    private_key: Any
    certificate: x509.Certificate
    #: The CA certificates, issuing CA first, then up towards the root; unrelated ones last.
    ca_chain: tuple[x509.Certificate, ...]


class Pkcs12TooLarge(ValidationError):
    code = "pkcs12_too_large"
    status = 413


def invalid(detail: str) -> ValidationError:
    return ValidationError(
        f"not a usable PKCS#12 file: {detail}; export the certificate with its private key and CA chain "
        "as PKCS#12 (.p12 or .pfx) and upload that file",
        code="invalid_pkcs12",
    )


def check_size(size: int) -> None:
    if size > MAX_PKCS12_BYTES:
        raise Pkcs12TooLarge(
            f"the PKCS#12 file is {size} bytes; at most {MAX_PKCS12_BYTES} bytes (24 KiB) are accepted: "
            "leave unneeded certificates out of the file"
        )


def inspect(data: bytes) -> tuple[Protection, ...]:
    """The encryption of each encrypted part, read without the passphrase. Anything that is
    not a PKCS#12 structure raises ``invalid_pkcs12``."""
    if not data:
        raise invalid("the file is empty")
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        if pfx["version"].native != "v3":
            raise invalid(f"version {pfx['version'].native} is not PKCS#12 v3")
        found: list[Protection] = []
        for content in pfx.authenticated_safe:
            kind = content["content_type"].native
            if kind == "data":
                for bag in asn1_pkcs12.SafeContents.load(content["content"].native):
                    if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                        found.append(_protection("private key", bag["bag_value"]["encryption_algorithm"]))
            elif kind == "encrypted_data":
                info = content["content"]["encrypted_content_info"]
                found.append(_protection("certificates", info["content_encryption_algorithm"]))
            else:
                raise invalid(f"unexpected content type {kind!r}")
    except ValidationError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError… on malformed input
        raise invalid(f"the data does not parse as PKCS#12 ({type(exc).__name__})") from None
    return tuple(found)


def _protection(part: str, algorithm: algos.EncryptionAlgorithm) -> Protection:
    name = algorithm["algorithm"].native
    cipher = algorithm.encryption_cipher
    if name == "pbes2":
        scheme = algorithm["parameters"]["encryption_scheme"]["algorithm"].native
        readable = f"PBES2 {scheme}"
    else:
        readable = _PBE_NAMES.get(name, name)
    return Protection(part=part, algorithm=readable, cipher=cipher)


def open_pkcs12(data: bytes, passphrase: str) -> Opened:
    """Decrypt with ``passphrase``. A structure that parsed but does not open means the
    passphrase is wrong: ``pkcs12_bad_passphrase``."""
    candidates = [passphrase.encode()] if passphrase else [b"", None]
    loaded = None
    for password in candidates:
        try:
            loaded = pkcs12.load_pkcs12(data, password)
            break
        except ValueError:
            continue
    if loaded is None:
        raise ValidationError(
            "the PKCS#12 passphrase is wrong: correct the passphrase on the enrollment object and re-enroll "
            "(the stored file is used again; no new upload is needed)",
            code="pkcs12_bad_passphrase",
        )
    if loaded.key is None:
        raise invalid("it holds no private key")
    if loaded.cert is None:
        raise invalid("it holds no certificate for its private key")
    certificate = loaded.cert.certificate
    if _spki(certificate.public_key()) != _spki(loaded.key.public_key()):
        raise invalid("its certificate is not the certificate of its private key")
    extras = [c.certificate for c in loaded.additional_certs]
    chain = tuple(issuing_chain(certificate, extras))
    return Opened(private_key=loaded.key, certificate=certificate, ca_chain=chain)


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def export_pkcs12(
    *, name: str, private_key: Any, certificate: x509.Certificate, ca_chain: list[x509.Certificate],
    passphrase: str, kdf_rounds: int = EXPORT_KDF_ROUNDS,
) -> bytes:
    """Key, identity certificate and the whole CA chain, encrypted with AES-256-CBC under a
    PBKDF2 key, with an HMAC-SHA-256 integrity check."""
    if not passphrase:
        raise ValidationError("a PKCS#12 export needs a passphrase", code="passphrase_required")
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(kdf_rounds)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(passphrase.encode())
    )
    return pkcs12.serialize_key_and_certificates(
        name.encode(), private_key, certificate, ca_chain or None, encryption  # type: ignore[arg-type]
    )
