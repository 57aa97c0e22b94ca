"""Helpers shared by the SCEP tests: RSA requesters made once, CSRs with a challenge password,
a DER-to-BER rewriter, and whole SCEP messages (PKCSReq, CertRep) as BER-speaking peers send
them: strings in constructed chunks, definite or indefinite lengths."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AttributeOID, NameOID

from shared.protocols import cms as scep_cms
from shared.protocols import scep


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


def csr_for(key, common_name: str, *, challenge: str | None = None, subject: x509.Name | None = None,
            sans: Sequence[str] = ()) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or name(common_name))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]),
                                        critical=False)
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


#: Character strings and times, which BER may send in chunks like OCTET STRINGs.
_STRING_TAGS = frozenset({0x0C, 0x12, 0x13, 0x14, 0x16, 0x17, 0x18, 0x1A, 0x1E})
#: Deep enough to reach every part of a SCEP message (its signed attributes' values included).
ALL_LEVELS = 12


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _wrap(tag: int, body: bytes, indefinite: bool) -> bytes:
    if indefinite:
        return bytes([tag, 0x80]) + body + b"\x00\x00"
    return bytes([tag]) + _length(len(body)) + body


def to_ber(der: bytes, *, chunk: int = 7, depth: int = 5, indefinite: bool = True, strings: bool = False) -> bytes:
    """The same value in BER, as streaming CMS encoders write it: the outer ``depth`` levels of
    constructed TLVs re-encoded with indefinite length (definite with ``indefinite=False``), and
    their OCTET STRINGs cut into constructed chunks of ``chunk`` octets (of the same kind of
    length). Implicitly tagged values (context-specific primitives: in CMS, OCTET STRINGs such
    as encryptedContent) are cut the same way; with ``strings``, character strings and times
    too. Certificates stay DER, as those encoders embed them."""
    out, pos = bytearray(), 0
    while pos < len(der):
        tag, start, end = _tlv(der, pos)
        contents = der[start:end]
        cut = tag == 0x04 or tag & 0xE0 == 0x80 or (strings and tag in _STRING_TAGS)
        if depth > 0 and tag & 0x20 and not _is_certificate(tag, contents):
            inner = to_ber(contents, chunk=chunk, depth=depth - 1, indefinite=indefinite, strings=strings)
            out += _wrap(tag, inner, indefinite)
        elif depth >= 0 and cut and len(contents) > chunk:
            pieces = b"".join(b"\x04" + _length(len(contents[i:i + chunk])) + contents[i:i + chunk]
                              for i in range(0, len(contents), chunk))
            out += _wrap(tag | 0x20, pieces, indefinite)
        else:
            out += der[pos:end]
        pos = end
    return bytes(out)


# --- whole SCEP messages in BER -----------------------------------------------------------------

#: Signed attributes scep_cms.sign adds itself: contentType, messageDigest, signingTime.
_ADDED_BY_SIGN = {"1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4", "1.2.840.113549.1.9.5"}


def ber_signed(content: bytes, attributes: Sequence[tuple[str, core.Asn1Value]], *, key: rsa.RSAPrivateKey,
               cert: x509.Certificate, digest: str, chunk: int, indefinite: bool) -> bytes:
    """A SCEP SignedData as streaming encoders send it: the envelope it carries (``content``) in
    BER, encryptedContent in chunks, signed as such; then the SignedData itself in BER, eContent
    and the signed attributes' strings in chunks. The signature covers the attributes' DER, as
    CMS asks."""
    inner = to_ber(content, chunk=chunk, depth=ALL_LEVELS, indefinite=indefinite) if content else b""
    signed = scep_cms.sign(inner, key=key, cert=cert, digest=digest, attributes=attributes, now=now())
    return to_ber(signed, chunk=chunk, depth=ALL_LEVELS, indefinite=indefinite, strings=True)


def ber_pkcs_req(requester: scep.Requester, csr: x509.CertificateSigningRequest, *, transaction_id: str,
                 sender_nonce: bytes, chunk: int = 7, indefinite: bool = True) -> bytes:
    """A PKCSReq as a BER-speaking client (Bouncy Castle, a streaming OpenSSL) sends it."""
    sealed = scep_cms.envelope(csr.public_bytes(serialization.Encoding.DER), recipient=requester.recipient,
                               cipher=requester.cipher)
    attributes = [
        (scep.MESSAGE_TYPE, core.PrintableString(str(int(scep.MessageType.PKCS_REQ)))),
        (scep.TRANSACTION_ID, core.PrintableString(transaction_id)),
        (scep.SENDER_NONCE, core.OctetString(sender_nonce)),
    ]
    return ber_signed(sealed, attributes, key=requester.key, cert=requester.cert, digest=requester.digest,
                      chunk=chunk, indefinite=indefinite)


def ber_cert_rep(der: bytes, *, signer: x509.Certificate, key: rsa.RSAPrivateKey, cert: x509.Certificate,
                 chunk: int = 7, indefinite: bool = True) -> bytes:
    """A CertRep (signed by ``signer``) as a BER-speaking CA sends it, signed again with ``key``
    and ``cert`` (its content changed, so must its signature): same attributes, same envelope."""
    message = scep_cms.read_signed(der, trusted=[signer])
    attributes = [(oid, value) for oid, values in message.attributes.items() if oid not in _ADDED_BY_SIGN
                  for value in values]
    return ber_signed(message.content, attributes, key=key, cert=cert, digest=message.digest, chunk=chunk,
                      indefinite=indefinite)
