"""SCEP (RFC 8894) message codec: bytes in, typed messages out, and back. Pure, no transport:
the CA simulator's SCEP server and the device's SCEP client both use it.

    requester                                       CA (or its RA)
    PKCSReq / RenewalReq / CertPoll / GetCert / GetCRL
      = SignedData(signer: requester) over EnvelopedData(to: CA) over the request  ──►
                                                   ◄── CertRep = SignedData(signer: CA) over
                                                       EnvelopedData(to: requester) over certs

What real peers need, and this codec does: the CertRep's SignerInfo names ``rsaEncryption``
as its signature algorithm (strongSwan refuses anything else) and uses the digest the request
used; the reply is sealed with the requester's content cipher; input may be BER; a
transactionID is any printable string (clients send hex or decimal). Every defect of an
incoming message raises one :class:`ScepDecodeError` carrying the failInfo to answer with.
"""

from __future__ import annotations

import hashlib
import os
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from functools import partial

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AttributeOID

from shared.errors import ValidationError
from shared.protocols import cms as scep_cms
from shared.protocols.cms import DIGESTS, CmsError, ContentCipher

__all__ = [
    "CA_CERT", "CA_RA_CERT", "PKI_MESSAGE", "NEXT_CA_CERT", "CAPABILITIES", "DIGESTS",
    "ContentCipher", "MessageType", "PkiStatus", "FailInfo", "ScepDecodeError",
    "Requester", "Responder", "PkiRequest", "CertRep",
    "parse_pki_message", "build_cert_rep", "build_pkcs_req", "build_renewal_req", "build_cert_poll",
    "build_get_cert", "build_get_crl", "parse_cert_rep", "new_nonce", "transaction_id_for",
    "self_signed_signer", "parse_caps", "format_caps", "preferred_algorithms",
    "encode_ca_certs", "decode_ca_certs",
]

# Content types of the SCEP HTTP answers.
CA_CERT = "application/x-x509-ca-cert"
CA_RA_CERT = "application/x-x509-ca-ra-cert"
NEXT_CA_CERT = "application/x-x509-next-ca-cert"
PKI_MESSAGE = "application/x-pki-message"

# Signed attributes (RFC 8894 3.2.1).
MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
PKI_STATUS = "2.16.840.1.113733.1.9.3"
FAIL_INFO = "2.16.840.1.113733.1.9.4"
SENDER_NONCE = "2.16.840.1.113733.1.9.5"
RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"
SIGNING_TIME = "1.2.840.113549.1.9.5"

NONCE_BYTES = 16
_NONCE_SIZES = range(8, 65)
_TRANSACTION_ID_CHARS = frozenset(string.ascii_letters + string.digits + " '()+,-./:=?")
MAX_TRANSACTION_ID = 128


class MessageType(IntEnum):
    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20  # GetCertInitial in the drafts
    GET_CERT = 21
    GET_CRL = 22


class PkiStatus(IntEnum):
    SUCCESS = 0
    FAILURE = 2
    PENDING = 3


class FailInfo(IntEnum):
    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4

    @property
    def code(self) -> str:
        """Stable error code: ``bad_message_check``."""
        return self.name.lower()

    @property
    def rfc_name(self) -> str:
        """The RFC's spelling: ``badMessageCheck``."""
        head, *rest = self.name.lower().split("_")
        return head + "".join(word.capitalize() for word in rest)


class ScepDecodeError(ValidationError):
    """A SCEP message the CA cannot act on, with the failInfo to answer. ``transaction_id``,
    ``sender_nonce`` and ``digest`` are set when they could be read, so that the answer can be
    a CertRep; without them only an HTTP error (400) is possible."""

    status = 400

    def __init__(self, reason: str, *, fail_info: FailInfo = FailInfo.BAD_MESSAGE_CHECK,
                 transaction_id: str | None = None, sender_nonce: bytes | None = None,
                 digest: str | None = None) -> None:
        super().__init__(reason, code=fail_info.code)
        self.fail_info = fail_info
        self.transaction_id = transaction_id
        self.sender_nonce = sender_nonce
        self.digest = digest


@dataclass(frozen=True, kw_only=True)
class Requester:
    """Who sends a request and how: the signing key and certificate (self-signed for a first
    enrollment, the current one for a renewal), the CA or RA certificate to encrypt to, and
    the algorithms."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    recipient: x509.Certificate
    cipher: ContentCipher = ContentCipher.AES128
    digest: str = "sha256"

    def __post_init__(self) -> None:
        if not isinstance(self.key, rsa.RSAPrivateKey):
            raise TypeError("a SCEP requester signs with an RSA key (the CA encrypts its answer to it)")
        object.__setattr__(self, "cipher", ContentCipher(self.cipher))
        if self.digest not in DIGESTS:
            raise ValueError(f"digest must be one of {sorted(DIGESTS)}")


@dataclass(frozen=True, kw_only=True)
class Responder:
    """Who signs CertReps and opens requests: the issuing CA, or an RA acting for it."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    #: Certificates sent along in every CertRep (e.g. the CA above an RA).
    extra_certs: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.key, rsa.RSAPrivateKey):
            raise TypeError("SCEP answers are signed with an RSA key; use an RSA CA or an RA")


@dataclass(frozen=True, kw_only=True)
class PkiRequest:
    """A verified, decrypted request. Exactly one of ``csr``, ``issuer_and_subject`` and
    ``issuer_and_serial`` is set, by message type."""

    message_type: MessageType
    transaction_id: str
    sender_nonce: bytes
    signer_cert: x509.Certificate
    digest: str
    cipher: ContentCipher
    #: The decrypted messageData, for telling a repeat from a different request.
    content: bytes = field(repr=False)
    signing_time: datetime | None = None
    csr: x509.CertificateSigningRequest | None = None
    issuer_and_subject: tuple[x509.Name, x509.Name] | None = None
    issuer_and_serial: tuple[x509.Name, int] | None = None

    @property
    def challenge_password(self) -> str | None:
        if self.csr is None:
            return None
        try:
            value = self.csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
        except Exception:  # noqa: BLE001 - absent or unreadable: no password
            return None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def fingerprint(self) -> str:
        """Same value for the same request re-sent; another for any other request."""
        digest = hashlib.sha256()
        for part in (str(int(self.message_type)).encode(), self.transaction_id.encode(), self.content):
            digest.update(len(part).to_bytes(4, "big") + part)
        return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class CertRep:
    status: PkiStatus
    transaction_id: str
    sender_nonce: bytes
    recipient_nonce: bytes
    digest: str
    fail_info: FailInfo | None = None
    fail_info_text: str | None = None
    certs: tuple[x509.Certificate, ...] = ()
    crl: x509.CertificateRevocationList | None = None


# --- helpers ------------------------------------------------------------------------------

def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def transaction_id_for(public_key) -> str:
    """A transactionID derived from the key being certified (RFC 8894 3.2.1.1): hex SHA-256
    of its SubjectPublicKeyInfo, so a retry after a crash uses the same one."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize().hex().upper()


def self_signed_signer(key: rsa.RSAPrivateKey, subject: x509.Name, *, now: datetime) -> x509.Certificate:
    """The throw-away certificate a first enrollment is signed with (RFC 8894 2.3)."""
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256())
    )


def _string(values: list[core.Asn1Value] | None, what: str) -> str | None:
    if not values:
        return None
    value = values[0]
    if not isinstance(value, core.PrintableString | core.IA5String | core.UTF8String):
        raise ScepDecodeError(f"the {what} attribute is not a string", fail_info=FailInfo.BAD_REQUEST)
    return value.native


def _octets(values: list[core.Asn1Value] | None) -> bytes | None:
    if not values or not isinstance(values[0], core.OctetString):
        return None
    return values[0].native


@dataclass
class _Known:
    """What could be read of a message so far: enough to answer a failure with a CertRep."""

    transaction_id: str | None = None
    sender_nonce: bytes | None = None
    digest: str | None = None

    def error(self, reason: str, fail_info: FailInfo = FailInfo.BAD_MESSAGE_CHECK) -> ScepDecodeError:
        return ScepDecodeError(reason, fail_info=fail_info, transaction_id=self.transaction_id,
                               sender_nonce=self.sender_nonce, digest=self.digest)


def _peek(der: bytes) -> _Known:
    """Best effort, unverified: the transactionID, senderNonce and digest of a message, so
    that even a message failing its checks can get a CertRep. Never raises."""
    known = _Known()
    try:
        signer_info = scep_cms.load_signed_data(der)["content"]["signer_infos"][0]
        digest = signer_info["digest_algorithm"]["algorithm"].native
        known.digest = digest if digest in DIGESTS else None
        for attribute in signer_info["signed_attrs"]:
            value = core.load(attribute["values"][0].dump())
            if attribute["type"].dotted == TRANSACTION_ID and isinstance(value, core.PrintableString):
                known.transaction_id = _checked_transaction_id(value.native)
            elif attribute["type"].dotted == SENDER_NONCE and isinstance(value, core.OctetString):
                if len(value.native) in _NONCE_SIZES:
                    known.sender_nonce = value.native
    except Exception:  # noqa: BLE001 - anything unreadable simply stays unknown
        pass
    return known


def _checked_transaction_id(value: str) -> str:
    if not value or len(value) > MAX_TRANSACTION_ID or not set(value) <= _TRANSACTION_ID_CHARS:
        raise ScepDecodeError(
            f"the transactionID must be 1 to {MAX_TRANSACTION_ID} printable characters (hex or decimal)",
            fail_info=FailInfo.BAD_REQUEST,
        )
    return value


def _name(value: asn1_x509.Name) -> x509.Name:
    rdns = []
    for rdn in value.chosen:
        attributes = []
        for pair in rdn:
            text = pair["value"].native
            if not isinstance(text, str):
                raise ValueError(f"name attribute {pair['type'].dotted} is not a string")
            attributes.append(x509.NameAttribute(x509.ObjectIdentifier(pair["type"].dotted), text))
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns)


class _IssuerAndSubject(core.Sequence):
    _fields = [("issuer", asn1_x509.Name), ("subject", asn1_x509.Name)]


def _asn1_name(name: x509.Name) -> asn1_x509.Name:
    return asn1_x509.Name.load(name.public_bytes())


# --- the CA's side ------------------------------------------------------------------------

def parse_pki_message(der: bytes, recipient_key: rsa.RSAPrivateKey, recipient_cert: x509.Certificate
                      ) -> PkiRequest:
    """Verify, decrypt and decode a request sent to the CA (or RA) holding ``recipient_key``."""
    known = _peek(der)
    try:
        signed = scep_cms.read_signed(der)
    except CmsError as exc:
        raise known.error(exc.reason, FailInfo.BAD_ALG if exc.unsupported else FailInfo.BAD_MESSAGE_CHECK) from None
    known.digest = signed.digest
    attrs = signed.attributes
    transaction_id = _string(attrs.get(TRANSACTION_ID), "transactionID")
    if transaction_id is None:
        raise known.error("the message has no transactionID attribute", FailInfo.BAD_REQUEST)
    known.transaction_id = transaction_id = _checked_transaction_id(transaction_id)
    nonce = _octets(attrs.get(SENDER_NONCE))
    if nonce is None or len(nonce) not in _NONCE_SIZES:
        raise known.error("the message needs a senderNonce of 8 to 64 octets (16 is usual)", FailInfo.BAD_REQUEST)
    known.sender_nonce = nonce
    message_type = _message_type(_string(attrs.get(MESSAGE_TYPE), "messageType"), known)
    signing_time = attrs.get(SIGNING_TIME, [None])[0]
    try:
        content, cipher = scep_cms.open_envelope(signed.content, key=recipient_key, cert=recipient_cert)
    except CmsError as exc:
        raise known.error(exc.reason, FailInfo.BAD_ALG if exc.unsupported else FailInfo.BAD_MESSAGE_CHECK) from None
    request = partial(
        PkiRequest, message_type=message_type, transaction_id=transaction_id, sender_nonce=nonce,
        signer_cert=signed.signer, digest=signed.digest, cipher=cipher, content=content,
        signing_time=signing_time.native if isinstance(signing_time, core.UTCTime | core.GeneralizedTime) else None,
    )
    try:
        if message_type in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
            csr = x509.load_der_x509_csr(content)
            try:
                csr.public_key()
            except UnsupportedAlgorithm:
                raise known.error("the certificate request's key type is not supported; use RSA or ECDSA",
                                  FailInfo.BAD_ALG) from None
            if not csr.is_signature_valid:
                raise known.error("the certificate request's signature does not verify with its own key")
            return request(csr=csr)
        if message_type is MessageType.CERT_POLL:
            names = _IssuerAndSubject.load(content, strict=True)
            return request(issuer_and_subject=(_name(names["issuer"]), _name(names["subject"])))
        serial = cms.IssuerAndSerialNumber.load(content, strict=True)
        return request(issuer_and_serial=(_name(serial["issuer"]), serial["serial_number"].native))
    except ScepDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any defect of the decrypted content is the client's
        raise known.error(f"the {message_type.name} content cannot be read: {scep_cms.brief(exc)}",
                          FailInfo.BAD_REQUEST) from None


def _message_type(value: str | None, known: _Known) -> MessageType:
    try:
        message_type = MessageType(int(value or ""))
    except ValueError:
        raise known.error(f"messageType {value!r} is not one a CA accepts", FailInfo.BAD_REQUEST) from None
    if message_type is MessageType.CERT_REP:
        raise known.error("a CertRep is the CA's answer, not a request", FailInfo.BAD_REQUEST)
    return message_type


def build_cert_rep(responder: Responder, *, transaction_id: str, recipient_nonce: bytes, status: PkiStatus,
                   now: datetime, digest: str = "sha256", fail_info: FailInfo | None = None,
                   fail_info_text: str | None = None, certs: Sequence[x509.Certificate] = (),
                   crl: x509.CertificateRevocationList | None = None, recipient: x509.Certificate | None = None,
                   cipher: ContentCipher | None = None, sender_nonce: bytes | None = None) -> bytes:
    """A CertRep. SUCCESS carries ``certs`` (and/or ``crl``) sealed to ``recipient`` with
    ``cipher``; FAILURE names its ``fail_info``; PENDING and FAILURE carry no envelope."""
    status = PkiStatus(status)
    attributes: list[tuple[str, core.Asn1Value]] = [
        (MESSAGE_TYPE, core.PrintableString(str(int(MessageType.CERT_REP)))),
        (PKI_STATUS, core.PrintableString(str(int(status)))),
        (TRANSACTION_ID, core.PrintableString(transaction_id)),
        (SENDER_NONCE, core.OctetString(sender_nonce or new_nonce())),
        (RECIPIENT_NONCE, core.OctetString(recipient_nonce)),
    ]
    content = b""
    if status is PkiStatus.FAILURE:
        if fail_info is None:
            raise ValueError("a FAILURE CertRep needs a fail_info")
        attributes.append((FAIL_INFO, core.PrintableString(str(int(fail_info)))))
        if fail_info_text:
            attributes.append((FAIL_INFO_TEXT, core.UTF8String(fail_info_text)))
    elif status is PkiStatus.SUCCESS:
        if recipient is None or cipher is None or (not certs and crl is None):
            raise ValueError("a SUCCESS CertRep needs certificates or a CRL, a recipient and a cipher")
        content = scep_cms.envelope(scep_cms.certs_only(certs, [] if crl is None else [crl]), recipient=recipient,
                                    cipher=cipher)
    return scep_cms.sign(content, key=responder.key, cert=responder.cert, digest=digest, attributes=attributes,
                         now=now, certificates=responder.extra_certs)


# --- the requester's side -----------------------------------------------------------------

def _build(message_type: MessageType, content: bytes, requester: Requester, *, transaction_id: str,
           sender_nonce: bytes, now: datetime) -> bytes:
    sealed = scep_cms.envelope(content, recipient=requester.recipient, cipher=requester.cipher)
    attributes = [
        (MESSAGE_TYPE, core.PrintableString(str(int(message_type)))),
        (TRANSACTION_ID, core.PrintableString(_checked_transaction_id(transaction_id))),
        (SENDER_NONCE, core.OctetString(sender_nonce)),
    ]
    return scep_cms.sign(sealed, key=requester.key, cert=requester.cert, digest=requester.digest,
                         attributes=attributes, now=now)


def build_pkcs_req(requester: Requester, csr: x509.CertificateSigningRequest, *, transaction_id: str,
                   sender_nonce: bytes, now: datetime) -> bytes:
    """A first enrollment: ``requester.cert`` is self-signed with the key the CSR carries."""
    return _build(MessageType.PKCS_REQ, csr.public_bytes(serialization.Encoding.DER), requester,
                  transaction_id=transaction_id, sender_nonce=sender_nonce, now=now)


def build_renewal_req(requester: Requester, csr: x509.CertificateSigningRequest, *, transaction_id: str,
                      sender_nonce: bytes, now: datetime) -> bytes:
    """A renewal: signed with the current certificate (``requester.cert``) and its key."""
    return _build(MessageType.RENEWAL_REQ, csr.public_bytes(serialization.Encoding.DER), requester,
                  transaction_id=transaction_id, sender_nonce=sender_nonce, now=now)


def build_cert_poll(requester: Requester, *, issuer: x509.Name, subject: x509.Name, transaction_id: str,
                    sender_nonce: bytes, now: datetime) -> bytes:
    """Ask again about a PENDING request (same transactionID, new nonce)."""
    content = _IssuerAndSubject({"issuer": _asn1_name(issuer), "subject": _asn1_name(subject)}).dump()
    return _build(MessageType.CERT_POLL, content, requester, transaction_id=transaction_id,
                  sender_nonce=sender_nonce, now=now)


def _issuer_and_serial(issuer: x509.Name, serial: int) -> bytes:
    return cms.IssuerAndSerialNumber({"issuer": _asn1_name(issuer), "serial_number": serial}).dump()


def build_get_cert(requester: Requester, *, issuer: x509.Name, serial: int, transaction_id: str,
                   sender_nonce: bytes, now: datetime) -> bytes:
    return _build(MessageType.GET_CERT, _issuer_and_serial(issuer, serial), requester,
                  transaction_id=transaction_id, sender_nonce=sender_nonce, now=now)


def build_get_crl(requester: Requester, *, issuer: x509.Name, serial: int, transaction_id: str,
                  sender_nonce: bytes, now: datetime) -> bytes:
    """The CRL covering the certificate ``issuer``/``serial``."""
    return _build(MessageType.GET_CRL, _issuer_and_serial(issuer, serial), requester,
                  transaction_id=transaction_id, sender_nonce=sender_nonce, now=now)


def parse_cert_rep(der: bytes, requester: Requester, *, signers: Sequence[x509.Certificate] = (),
                   transaction_id: str | None = None, sender_nonce: bytes | None = None) -> CertRep:
    """Verify a CertRep against the CA or RA certificates (``signers``; by default the
    certificate the request was encrypted to) and, on SUCCESS, decrypt it with the requester's
    key. Given ``transaction_id`` and ``sender_nonce``, the answer must match them."""
    try:
        signed = scep_cms.read_signed(der, trusted=list(signers) or [requester.recipient])
    except CmsError as exc:
        raise ScepDecodeError(f"the CA's answer is not acceptable: {exc.reason}",
                              fail_info=FailInfo.BAD_ALG if exc.unsupported else FailInfo.BAD_MESSAGE_CHECK
                              ) from None
    attrs = signed.attributes
    if _string(attrs.get(MESSAGE_TYPE), "messageType") != str(int(MessageType.CERT_REP)):
        raise ScepDecodeError("the CA's answer is not a CertRep")
    got_id = _string(attrs.get(TRANSACTION_ID), "transactionID") or ""
    recipient_nonce = _octets(attrs.get(RECIPIENT_NONCE)) or b""
    if transaction_id is not None and got_id != transaction_id:
        raise ScepDecodeError(f"the CA answered transaction {got_id!r}, not {transaction_id!r}")
    if sender_nonce is not None and recipient_nonce != sender_nonce:
        raise ScepDecodeError("the CA's recipientNonce does not echo our senderNonce (a replayed answer?)")
    try:
        status = PkiStatus(int(_string(attrs.get(PKI_STATUS), "pkiStatus") or ""))
        raw_fail = _string(attrs.get(FAIL_INFO), "failInfo")
        fail_info = FailInfo(int(raw_fail)) if raw_fail is not None else None
    except ValueError as exc:
        raise ScepDecodeError(f"the CA's answer has an unknown status or failInfo: {exc}") from None
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    if status is PkiStatus.SUCCESS:
        try:
            plain, _ = scep_cms.open_envelope(signed.content, key=requester.key, cert=requester.cert)
            certs, crls = scep_cms.read_certs_only(plain)
        except CmsError as exc:
            raise ScepDecodeError(f"the CA's answer cannot be decrypted: {exc.reason}") from None
    return CertRep(
        status=status, transaction_id=got_id, sender_nonce=_octets(attrs.get(SENDER_NONCE)) or b"",
        recipient_nonce=recipient_nonce, digest=signed.digest, fail_info=fail_info,
        fail_info_text=_string(attrs.get(FAIL_INFO_TEXT), "failInfoText"),
        certs=tuple(certs), crl=crls[0] if crls else None,
    )


# --- GetCACaps and GetCACert --------------------------------------------------------------

#: RFC 8894 3.5.2 capability keywords, in their canonical spelling.
CAPABILITIES = ("AES", "DES3", "GetNextCACert", "POSTPKIOperation", "Renewal", "SHA-1", "SHA-224", "SHA-256",
                "SHA-384", "SHA-512", "SCEPStandard", "Update")
_CANONICAL = {c.lower(): c for c in CAPABILITIES}


def parse_caps(text: str) -> frozenset[str]:
    """GetCACaps answer -> canonical keywords (case-insensitive; unknown ones are kept as sent)."""
    return frozenset(_CANONICAL.get(line.strip().lower(), line.strip()) for line in text.splitlines() if line.strip())


def format_caps(caps: Iterable[str]) -> str:
    """One keyword per line, LF-separated: what strongSwan's parser reads."""
    return "\n".join(caps) + "\n"


def preferred_algorithms(caps: Iterable[str]) -> tuple[ContentCipher, str]:
    """The strongest content cipher and digest a CA advertises; SCEPStandard implies AES and
    SHA-256; a CA that names nothing speaks DES and MD5 (RFC 8894 3.5.2)."""
    caps = set(caps)
    standard = "SCEPStandard" in caps
    cipher = (ContentCipher.AES128 if "AES" in caps or standard
              else ContentCipher.DES3 if "DES3" in caps else ContentCipher.DES)
    for keyword, digest in (("SHA-512", "sha512"), ("SHA-384", "sha384"), ("SHA-256", "sha256"),
                            ("SHA-224", "sha224"), ("SHA-1", "sha1")):
        if keyword in caps or (standard and digest == "sha256"):
            return cipher, digest
    return cipher, "md5"


def encode_ca_certs(certs: Sequence[x509.Certificate]) -> tuple[bytes, str]:
    """GetCACert's body and content type (RFC 8894 4.2.1): a CA alone, with no intermediate and
    no RA, as one DER certificate; else a certificates-only CMS SignedData holding the issuing
    CA, its chain and the RA certificates."""
    if len(certs) == 1:
        return certs[0].public_bytes(serialization.Encoding.DER), CA_CERT
    return scep_cms.certs_only(certs), CA_RA_CERT


def _one_certificate(body: bytes) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(body)]


def _certs_only(body: bytes) -> list[x509.Certificate]:
    return scep_cms.read_certs_only(body)[0]


def decode_ca_certs(body: bytes, content_type: str | None) -> list[x509.Certificate]:
    """The certificates of a GetCACert answer: one DER certificate (application/x-x509-ca-cert)
    or a certificates-only CMS SignedData in DER or BER (application/x-x509-ca-ra-cert). The
    content type says which to try first; a CA that labels its answer wrongly or not at all is
    still understood when the body is one of the two."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    readers = (_one_certificate, _certs_only) if media == CA_CERT else (_certs_only, _one_certificate)
    what = media or "no content type"
    problem: Exception | None = None
    for read in readers:
        try:
            certs = read(body)
        except (CmsError, ValueError) as exc:
            problem = problem or exc
            continue
        if not certs:
            raise ScepDecodeError(f"the GetCACert answer ({what}) holds no certificate",
                                  fail_info=FailInfo.BAD_REQUEST)
        return certs
    assert problem is not None
    raise ScepDecodeError(f"the GetCACert answer ({what}) cannot be read: {scep_cms.brief(problem)}",
                          fail_info=FailInfo.BAD_REQUEST)
