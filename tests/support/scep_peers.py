"""Helpers shared by the SCEP tests: RSA requesters made once, CSRs with a challenge password,
and a DER-to-BER rewriter that turns a message into what BER-speaking clients send."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AttributeOID, NameOID


def rsa_key() -> rsa.RSAPrivateKey:
    """RSA-2048: SCEP's key transport needs RSA (generate a few per module, not per test)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def now() -> datetime:
    return datetime.now(UTC)


def name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def csr_for(key, common_name: str, *, challenge: str | None = None,
            subject: x509.Name | None = None) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or name(common_name))
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    return builder.sign(key, hashes.SHA256())


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER TLV at ``pos``."""
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        size = first & 0x7F
        length = int.from_bytes(data[pos:pos + size], "big")
        pos += size
    else:
        length = first
    return tag, pos, pos + length


def _is_certificate(tag: int, contents: bytes) -> bool:
    """A SEQUENCE whose first element is a TBSCertificate (which opens with [0] version)."""
    if tag != 0x30 or contents[:1] != b"\x30":
        return False
    _, start, _ = _tlv(contents, 0)
    return contents[start:start + 2] == b"\xa0\x03"


def to_ber(der: bytes, *, chunk: int = 7, depth: int = 5) -> bytes:
    """The same value in BER, as streaming CMS encoders write it: the outer ``depth`` levels of
    constructed TLVs with indefinite length, and their OCTET STRINGs cut into constructed
    chunks of ``chunk`` octets. Certificates and deeper values (names) stay DER, as those
    encoders embed them."""
    out, pos = bytearray(), 0
    while pos < len(der):
        tag, start, end = _tlv(der, pos)
        contents = der[start:end]
        if depth > 0 and tag & 0x20 and not _is_certificate(tag, contents):
            out += bytes([tag, 0x80]) + to_ber(contents, chunk=chunk, depth=depth - 1) + b"\x00\x00"
        elif depth >= 0 and tag == 0x04 and len(contents) > chunk:
            pieces = b"".join(
                b"\x04" + bytes([len(contents[i:i + chunk])]) + contents[i:i + chunk]
                for i in range(0, len(contents), chunk)
            )
            out += b"\x24\x80" + pieces + b"\x00\x00"
        else:
            out += der[pos:end]
        pos = end
    return bytes(out)
