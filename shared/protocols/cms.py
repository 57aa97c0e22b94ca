"""The CMS (RFC 5652) pieces SCEP is made of: SignedData with signed attributes, EnvelopedData
with RSA key transport, and degenerate certs-only SignedData. Pure: asn1crypto holds the
structures, cryptography signs and encrypts.

Peers may send BER: every message is first re-encoded as DER (:mod:`.ber`) with the grammar
below, so a string sent in chunks (constructed, definite or indefinite length) reads as the
same string sent in one piece, wherever it is: eContent, encryptedContent, the signed
attributes, the certificates.

cryptography's own PKCS#7 builders cannot carry SCEP's signed attributes, hence asn1crypto.
Any defect in a message raises :class:`CmsError`; ``unsupported`` tells an algorithm we do
not speak (SCEP's badAlg) from a message that is broken or fails its checks (badMessageCheck).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from asn1crypto import algos, cms, core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from shared.protocols import ber
from shared.protocols.ber import ANY, INTEGER, OCTETS, OID, SEQUENCE, SET, Each, Seq, context

#: Digests a SCEP message may be signed with, by asn1crypto's names. MD5 and SHA-1 only for legacy peers.
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5, "sha1": hashes.SHA1, "sha224": hashes.SHA224,
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}
#: Signature algorithm names (asn1crypto) that mean RSA PKCS#1 v1.5, and the digest each implies.
_RSA_PKCS1 = {"rsassa_pkcs1v15": None, "md5_rsa": "md5", "sha1_rsa": "sha1", "sha224_rsa": "sha224",
              "sha256_rsa": "sha256", "sha384_rsa": "sha384", "sha512_rsa": "sha512"}


class ContentCipher(StrEnum):
    """Content-encryption algorithms of a SCEP envelope (all CBC)."""

    DES = "des"
    DES3 = "des3"
    AES128 = "aes128"
    AES192 = "aes192"
    AES256 = "aes256"


#: cipher -> (asn1crypto algorithm name, key bytes, IV bytes)
_CIPHERS: dict[ContentCipher, tuple[str, int, int]] = {
    ContentCipher.DES: ("des", 8, 8),
    ContentCipher.DES3: ("tripledes_3key", 24, 8),
    ContentCipher.AES128: ("aes128_cbc", 16, 16),
    ContentCipher.AES192: ("aes192_cbc", 24, 16),
    ContentCipher.AES256: ("aes256_cbc", 32, 16),
}
_CIPHER_BY_NAME = {name: cipher for cipher, (name, _, _) in _CIPHERS.items()}


class CmsError(ValueError):
    """A CMS structure we cannot use; ``unsupported`` when only the algorithm is the problem."""

    def __init__(self, reason: str, *, unsupported: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsupported = unsupported


@dataclass(frozen=True)
class SignedMessage:
    """A verified SignedData: its content, signed attributes by dotted OID, and who signed."""

    content: bytes
    attributes: dict[str, list[core.Asn1Value]]
    signer: x509.Certificate
    digest: str


# --- reading BER ---------------------------------------------------------------------------

# Where CMS has implicitly tagged OCTET STRINGs (the rest :mod:`.ber` reads by universal tags).
#: SignerIdentifier / RecipientIdentifier: issuerAndSerialNumber, or [0] subjectKeyIdentifier.
_IDENTIFIER = {SEQUENCE: ANY, context(0): OCTETS}
_SIGNER_INFO = Seq({INTEGER: ANY}, _IDENTIFIER, {SEQUENCE: ANY}, {context(0): ANY}, {SEQUENCE: ANY},
                   {ber.OCTET_STRING: ANY}, {context(1): ANY})
_SIGNED_DATA = Seq({INTEGER: ANY}, {SET: ANY}, {SEQUENCE: ANY}, {context(0): ANY}, {context(1): ANY},
                   {SET: Each({SEQUENCE: _SIGNER_INFO})})
_KEY_TRANS = Seq({INTEGER: ANY}, _IDENTIFIER, {SEQUENCE: ANY}, {ber.OCTET_STRING: ANY})
#: EncryptedContentInfo: contentType, contentEncryptionAlgorithm, [0] IMPLICIT encryptedContent.
_ENCRYPTED_CONTENT = Seq({OID: ANY}, {SEQUENCE: ANY}, {context(0): OCTETS})
_ENVELOPED_DATA = Seq({INTEGER: ANY}, {context(0): ANY}, {SET: Each({SEQUENCE: _KEY_TRANS})},
                      {SEQUENCE: _ENCRYPTED_CONTENT}, {context(1): ANY})


def _content_info(content: ber.Seq) -> ber.Seq:
    return Seq({OID: ANY}, {context(0): Each({None: content})})


_SIGNED = _content_info(_SIGNED_DATA)
_ENVELOPED = _content_info(_ENVELOPED_DATA)


def load_signed_data(data: bytes) -> cms.ContentInfo:
    """A ContentInfo expected to hold SignedData, read from BER or DER (ValueError if unreadable)."""
    return cms.ContentInfo.load(ber.to_der(data, _SIGNED), strict=True)


def load_enveloped_data(data: bytes) -> cms.ContentInfo:
    """A ContentInfo expected to hold EnvelopedData, read from BER or DER (ValueError if unreadable)."""
    return cms.ContentInfo.load(ber.to_der(data, _ENVELOPED), strict=True)


# --- small conversions --------------------------------------------------------------------

def asn1_certificate(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def issuer_and_serial(cert: x509.Certificate) -> cms.IssuerAndSerialNumber:
    tbs = asn1_certificate(cert)["tbs_certificate"]
    return cms.IssuerAndSerialNumber({"issuer": tbs["issuer"], "serial_number": tbs["serial_number"]})


def _matches(identifier: core.Choice, cert: x509.Certificate) -> bool:
    """Does a SignerIdentifier / RecipientIdentifier name this certificate?"""
    if identifier.name == "issuer_and_serial_number":
        wanted = identifier.chosen
        return (wanted["serial_number"].native == cert.serial_number
                and wanted["issuer"] == asn1_certificate(cert)["tbs_certificate"]["issuer"])
    if identifier.name == "subject_key_identifier":
        return identifier.chosen.native in _key_identifiers(cert)
    return False


def _key_identifiers(cert: x509.Certificate) -> set[bytes]:
    ids = {x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest}
    try:
        ids.add(cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
    except (x509.ExtensionNotFound, ValueError):
        pass
    return ids


def _load_certificates(signed_data: cms.SignedData) -> list[x509.Certificate]:
    certs = []
    for choice in signed_data["certificates"] or []:
        if choice.name == "certificate":
            try:
                certs.append(x509.load_der_x509_certificate(choice.chosen.dump()))
            except ValueError:
                continue  # an unreadable extra certificate is not the signer we look for
    return certs


def brief(exc: Exception) -> str:
    """A parser's complaint, short enough for an answer (asn1crypto can quote huge numbers)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def _hash(name: str) -> hashes.HashAlgorithm:
    try:
        return DIGESTS[name]()
    except KeyError:
        raise CmsError(f"digest algorithm {name} is not supported", unsupported=True) from None


# --- SignedData ---------------------------------------------------------------------------

def _attribute(oid: str, value: core.Asn1Value) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": oid, "values": [value]})


def sign(content: bytes, *, key: rsa.RSAPrivateKey, cert: x509.Certificate, digest: str,
         attributes: Sequence[tuple[str, core.Asn1Value]], now: datetime,
         certificates: Sequence[x509.Certificate] = ()) -> bytes:
    """A SignedData ContentInfo over ``content`` (type data) with ``attributes`` added to the
    usual contentType, messageDigest and signingTime. The SignerInfo's signature algorithm is
    plain ``rsaEncryption`` (strongSwan accepts nothing else); its digest is ``digest``."""
    algorithm = _hash(digest)
    hasher = hashes.Hash(algorithm)
    hasher.update(content)
    signed = [
        _attribute("1.2.840.113549.1.9.3", cms.ContentType("data")),
        _attribute("1.2.840.113549.1.9.4", core.OctetString(hasher.finalize())),
        _attribute("1.2.840.113549.1.9.5", cms.Time({"utc_time": now})),
        *(_attribute(oid, value) for oid, value in attributes),
    ]
    # DER orders a SET OF by encoding; OpenSSL-based peers re-encode before they verify.
    signed.sort(key=lambda a: a.dump())
    signed_attrs = cms.CMSAttributes(signed)
    signature = key.sign(signed_attrs.dump(), padding.PKCS1v15(), algorithm)
    digest_algorithm = cms.DigestAlgorithm({"algorithm": digest, "parameters": core.Null()})
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier(name="issuer_and_serial_number", value=issuer_and_serial(cert)),
        "digest_algorithm": digest_algorithm,
        "signed_attrs": signed_attrs,
        "signature_algorithm": cms.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15",
                                                          "parameters": core.Null()}),
        "signature": signature,
    })
    signed_data = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [digest_algorithm],
        "encap_content_info": {"content_type": "data", "content": content},
        "certificates": [asn1_certificate(c) for c in dict.fromkeys([cert, *certificates])],
        "signer_infos": [signer_info],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def read_signed(der: bytes, *, trusted: Sequence[x509.Certificate] = ()) -> SignedMessage:
    """Parse a SignedData and verify its one signature. Without ``trusted`` the signer is
    taken from the message's own certificates (a SCEP requester signs with a certificate it
    brings); with it, only those certificates may have signed."""
    try:
        info = load_signed_data(der)
        if info["content_type"].native != "signed_data":
            raise CmsError(f"the message is {info['content_type'].native}, not signed-data")
        signed_data = info["content"]
        signer_infos = list(signed_data["signer_infos"])
        if len(signer_infos) != 1:
            raise CmsError(f"the message has {len(signer_infos)} signers; SCEP messages have one")
        signer_info = signer_infos[0]
        encap = signed_data["encap_content_info"]
        content = encap["content"].native if encap["content"] else b""
        if not isinstance(content, bytes):
            raise CmsError("the signed content is not an octet string")
        candidates = list(trusted) or _load_certificates(signed_data)
        signer = next((c for c in candidates if _matches(signer_info["sid"], c)), None)
        if signer is None:
            raise CmsError("the signer's certificate is not in the message" if not trusted
                           else "the message is not signed by the expected certificate")
        digest = signer_info["digest_algorithm"]["algorithm"].native
        _verify_signer_info(signer_info, signer, digest, content, encap["content_type"].native)
        attributes: dict[str, list[core.Asn1Value]] = {}
        for attribute in signer_info["signed_attrs"]:
            attributes.setdefault(attribute["type"].dotted, []).extend(
                core.load(v.dump()) for v in attribute["values"]
            )
    except CmsError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever breaks while reading untrusted input is its defect
        raise CmsError(f"the message is not a readable CMS signed-data structure ({brief(exc)})") from None
    return SignedMessage(content=content, attributes=attributes, signer=signer, digest=digest)


def _verify_signer_info(signer_info: cms.SignerInfo, signer: x509.Certificate, digest: str,
                        content: bytes, content_type: str) -> None:
    algorithm = _hash(digest)
    public_key = signer.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CmsError("the signer's key is not RSA; SCEP needs RSA keys for its key transport",
                       unsupported=True)
    signed_attrs = signer_info["signed_attrs"]
    if not signed_attrs:
        raise CmsError("the signer info has no signed attributes")
    values = {a["type"].native: a["values"] for a in signed_attrs}
    if values.get("content_type") is None or values["content_type"][0].native != content_type:
        raise CmsError("the contentType attribute does not match the signed content")
    hasher = hashes.Hash(algorithm)
    hasher.update(content)
    if values.get("message_digest") is None or values["message_digest"][0].native != hasher.finalize():
        raise CmsError("the messageDigest attribute does not match the signed content")
    sig_padding, sig_hash = _signature_scheme(signer_info["signature_algorithm"], digest)
    signature = signer_info["signature"].native
    # The signature covers the attributes as a DER SET OF: the received bytes (read as DER)
    # re-tagged, or, from a sender that did not sort them, the same in DER order.
    received = signed_attrs.dump()
    candidates = [b"\x31" + received[1:], cms.CMSAttributes(list(signed_attrs)).dump(force=True)]
    for encoded in dict.fromkeys(candidates):
        try:
            public_key.verify(signature, encoded, sig_padding, sig_hash)
            return
        except InvalidSignature:
            continue
    raise CmsError("the signature does not verify with the signer's certificate")


def _signature_scheme(algorithm: cms.SignedDigestAlgorithm, digest: str):
    name = algorithm["algorithm"].native
    if name in _RSA_PKCS1:
        return padding.PKCS1v15(), _hash(_RSA_PKCS1[name] or digest)
    if name == "rsassa_pss":
        params = algorithm["parameters"]
        pss_hash = _hash(params["hash_algorithm"]["algorithm"].native)
        mgf_hash = _hash(params["mask_gen_algorithm"]["parameters"]["algorithm"].native)
        return padding.PSS(padding.MGF1(mgf_hash), params["salt_length"].native), pss_hash
    raise CmsError(f"signature algorithm {name} is not supported; sign with RSA", unsupported=True)


def certs_only(certs: Sequence[x509.Certificate] = (),
               crls: Sequence[x509.CertificateRevocationList] = ()) -> bytes:
    """A degenerate SignedData: certificates and CRLs, no content, no signers."""
    signed_data = {
        "version": "v1",
        "digest_algorithms": [],
        "encap_content_info": {"content_type": "data"},
        "signer_infos": [],
    }
    if certs:
        signed_data["certificates"] = [asn1_certificate(c) for c in certs]
    if crls:
        signed_data["crls"] = [
            cms.RevocationInfoChoice(name="crl", value=asn1_crl.CertificateList.load(
                crl.public_bytes(serialization.Encoding.DER)))
            for crl in crls
        ]
    return cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(signed_data)}).dump()


def read_certs_only(der: bytes) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    try:
        info = load_signed_data(der)
        if info["content_type"].native != "signed_data":
            raise CmsError("the certificates are not in a signed-data structure")
        signed_data = info["content"]
        certs = [x509.load_der_x509_certificate(c.chosen.dump())
                 for c in signed_data["certificates"] or [] if c.name == "certificate"]
        crls = [x509.load_der_x509_crl(c.chosen.dump()) for c in signed_data["crls"] or [] if c.name == "crl"]
    except CmsError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever breaks while reading untrusted input is its defect
        raise CmsError(f"the certificates cannot be read ({brief(exc)})") from None
    return certs, crls


# --- EnvelopedData ------------------------------------------------------------------------

def _cipher(cipher: ContentCipher, key: bytes, iv: bytes) -> Cipher:
    if cipher is ContentCipher.DES:
        return Cipher(TripleDES(key * 3), modes.CBC(iv))  # K|K|K: 3DES computes single DES
    if cipher is ContentCipher.DES3:
        return Cipher(TripleDES(key), modes.CBC(iv))
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def envelope(content: bytes, *, recipient: x509.Certificate, cipher: ContentCipher) -> bytes:
    """An EnvelopedData ContentInfo: ``content`` encrypted with ``cipher``, its key encrypted
    to ``recipient``'s RSA key (PKCS#1 v1.5), the recipient named by issuer and serial."""
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CmsError("the recipient's key is not RSA; SCEP encrypts to RSA keys only", unsupported=True)
    name, key_size, iv_size = _CIPHERS[ContentCipher(cipher)]
    key, iv = os.urandom(key_size), os.urandom(iv_size)
    pad = iv_size - len(content) % iv_size  # PKCS#7 padding; the block size equals the IV size
    encryptor = _cipher(ContentCipher(cipher), key, iv).encryptor()
    encrypted = encryptor.update(content + bytes([pad]) * pad) + encryptor.finalize()
    recipient_info = cms.KeyTransRecipientInfo({
        "version": "v0",
        "rid": cms.RecipientIdentifier(name="issuer_and_serial_number", value=issuer_and_serial(recipient)),
        "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15", "parameters": core.Null()},
        "encrypted_key": public_key.encrypt(key, padding.PKCS1v15()),
    })
    enveloped = cms.EnvelopedData({
        "version": "v0",
        "recipient_infos": [cms.RecipientInfo(name="ktri", value=recipient_info)],
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": algos.EncryptionAlgorithm(
                {"algorithm": name, "parameters": core.OctetString(iv)}),
            "encrypted_content": encrypted,
        },
    })
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def open_envelope(der: bytes, *, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> tuple[bytes, ContentCipher]:
    """The content of an EnvelopedData addressed to ``cert``, and the cipher it was sealed with."""
    try:
        info = load_enveloped_data(der)
        if info["content_type"].native != "enveloped_data":
            raise CmsError(f"the signed content is {info['content_type'].native}, not enveloped-data")
        enveloped = info["content"]
        recipient = next(
            (r.chosen for r in enveloped["recipient_infos"] if r.name == "ktri" and _matches(r.chosen["rid"], cert)),
            None,
        )
        if recipient is None:
            raise CmsError("the envelope is not encrypted to this CA's certificate; encrypt to the certificate "
                           "GetCACert returns")
        transport = recipient["key_encryption_algorithm"]["algorithm"].native
        if transport != "rsaes_pkcs1v15":
            raise CmsError(f"key transport {transport} is not supported; use rsaEncryption", unsupported=True)
        encrypted_info = enveloped["encrypted_content_info"]
        algorithm = encrypted_info["content_encryption_algorithm"]
        cipher = _CIPHER_BY_NAME.get(algorithm["algorithm"].native)
        if cipher is None:
            raise CmsError(f"content encryption {algorithm['algorithm'].native} is not supported",
                           unsupported=True)
        _, key_size, iv_size = _CIPHERS[cipher]
        iv = algorithm["parameters"].native
        encrypted = encrypted_info["encrypted_content"].native or b""
        if not isinstance(iv, bytes) or len(iv) != iv_size:
            raise CmsError("the envelope's IV has the wrong length")
        if not encrypted or len(encrypted) % iv_size:
            raise CmsError("the encrypted content is not a whole number of blocks")
        encrypted_key = recipient["encrypted_key"].native
    except CmsError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever breaks while reading untrusted input is its defect
        raise CmsError(f"the envelope is not a readable CMS enveloped-data structure ({brief(exc)})") from None
    try:
        content_key = key.decrypt(encrypted_key, padding.PKCS1v15())
    except ValueError:
        raise CmsError("the content key cannot be decrypted with this CA's key") from None
    if len(content_key) != key_size:
        raise CmsError("the decrypted content key has the wrong length")
    decryptor = _cipher(cipher, content_key, iv).decryptor()
    padded = decryptor.update(encrypted) + decryptor.finalize()
    pad = padded[-1]
    if not 1 <= pad <= iv_size or padded[-pad:] != bytes([pad]) * pad:
        raise CmsError("the decrypted content has bad padding (wrong key or damaged message)")
    return padded[:-pad], cipher

