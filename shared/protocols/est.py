"""EST (RFC 7030) message codec: bytes in, typed objects out, and back. Pure, no transport:
the CA simulator's server and the device's EST client both use it.

What real clients need, and this codec does: bodies are base64 on ONE line (strongSwan's
``pki`` cannot read 64-column wrapping); requests are accepted with or without line breaks, and
as PEM; a request whose signature does not verify is refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ObjectIdentifier

from shared.errors import CertfleetError

#: Largest request body the server reads; a CSR is 0.5-3 KiB.
MAX_BODY_BYTES = 64 * 1024

PKCS10 = "application/pkcs10"
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CSRATTRS = "application/csrattrs"

OPERATIONS = ("cacerts", "simpleenroll", "simplereenroll", "csrattrs")
_WHITESPACE = re.compile(rb"\s+")


class EstError(CertfleetError):
    """An EST message that cannot be used: a stable code and, in the message, what to do. How
    a server answers it (which HTTP status) is the server's business, decided from the code."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


# --- base64 -------------------------------------------------------------------------------

def to_base64(der: bytes) -> bytes:
    """One line, no wrapping, no trailing newline."""
    return base64.b64encode(der)


def from_base64(body: bytes, *, what: str) -> bytes:
    """Base64 with or without line breaks (and tolerant of missing padding)."""
    text = _WHITESPACE.sub(b"", body)
    if not text:
        raise EstError(f"the {what} is empty; send it base64-encoded DER", code="empty_body")
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EstError(
            f"the {what} is not valid base64; send the DER encoding, base64-encoded", code="bad_base64"
        ) from None


# --- content types ------------------------------------------------------------------------

def media_type(content_type: str | None) -> str:
    """``application/pkcs10; charset=x`` -> ``application/pkcs10``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_request_headers(content_type: str | None, transfer_encoding: str | None) -> None:
    """An enrollment request must be a PKCS#10 in base64 (RFC 7030 4.2.1, RFC 8951)."""
    if media_type(content_type) != PKCS10:
        raise EstError(
            f"Content-Type {content_type or '(none)'!r} is not supported; send the request as {PKCS10}",
            code="unsupported_media_type",
        )
    if transfer_encoding and transfer_encoding.strip().lower() != "base64":
        raise EstError(
            f"Content-Transfer-Encoding {transfer_encoding!r} is not supported; send base64",
            code="unsupported_media_type",
        )


# --- certificate requests -----------------------------------------------------------------

def decode_csr(body: bytes) -> x509.CertificateSigningRequest:
    """A PKCS#10 request from an EST body, its signature verified."""
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(body.strip())
        else:
            csr = x509.load_der_x509_csr(from_base64(body, what="certificate request"))
    except ValueError as exc:
        raise EstError(f"the body is not a PKCS#10 certificate request: {exc}", code="bad_csr") from None
    try:
        valid = csr.is_signature_valid
    except (UnsupportedAlgorithm, ValueError, TypeError) as exc:
        raise EstError(f"the request's signature cannot be checked: {exc}",
                       code="bad_csr_signature") from None
    if not valid:
        raise EstError(
            "the request's signature does not verify with its own public key; sign the request with the "
            "private key of the key pair it carries",
            code="bad_csr_signature",
        )
    return csr


def encode_csr(csr: x509.CertificateSigningRequest) -> bytes:
    return to_base64(csr.public_bytes(serialization.Encoding.DER))


# --- certs-only PKCS#7 --------------------------------------------------------------------

def encode_certs_only(certs: Iterable[x509.Certificate]) -> bytes:
    """A degenerate (certs-only) PKCS#7 SignedData, base64 on one line."""
    return to_base64(pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER))


def decode_certs_only(body: bytes) -> list[x509.Certificate]:
    try:
        return pkcs7.load_der_pkcs7_certificates(from_base64(body, what="PKCS#7 response"))
    except ValueError as exc:
        raise EstError(f"the response is not a certs-only PKCS#7: {exc}", code="bad_pkcs7") from None


# --- CSR attributes (RFC 7030 4.5.2): a SEQUENCE OF OBJECT IDENTIFIER here ----------------

def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_oid(oid: ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        body += bytes(reversed(chunk))
    return b"\x06" + _der_length(len(body)) + bytes(body)


def encode_csr_attrs(oids: Iterable[ObjectIdentifier]) -> bytes:
    content = b"".join(_der_oid(o) for o in oids)
    return to_base64(b"\x30" + _der_length(len(content)) + content)


def decode_csr_attrs(body: bytes) -> list[str]:
    """The dotted OIDs at the top level of a CsrAttrs; attributes with values are skipped."""
    der = from_base64(body, what="CSR attributes") if body.strip() else b""
    if not der:
        return []

    def read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
        try:
            tag, first = data[pos], data[pos + 1]
            pos += 2
            if first & 0x80:
                size = first & 0x7F
                length = int.from_bytes(data[pos:pos + size], "big")
                pos += size
            else:
                length = first
            if pos + length > len(data):
                raise IndexError
        except IndexError:
            raise EstError("the CSR attributes are truncated DER", code="bad_csrattrs") from None
        return tag, data[pos:pos + length], pos + length

    tag, content, _ = read_tlv(der, 0)
    if tag != 0x30:
        raise EstError("the CSR attributes are not a DER SEQUENCE", code="bad_csrattrs")
    oids, pos = [], 0
    while pos < len(content):
        tag, value, pos = read_tlv(content, pos)
        if tag == 0x06:
            arcs, arc = [], 0
            for byte in value:
                arc = (arc << 7) | (byte & 0x7F)
                if not byte & 0x80:
                    arcs.append(arc)
                    arc = 0
            first = min(arcs[0] // 40, 2)
            oids.append(".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]])))
    return oids
