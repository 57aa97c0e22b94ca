"""The CMS pieces read BER as other implementations write it: an EnvelopedData whose
encryptedContent is a constructed OCTET STRING, a SignedData whose eContent and signed
attributes come in chunks, a certificates-only SignedData of indefinite length; each with
definite or indefinite lengths and chunks of any size, read as the DER original reads."""

from __future__ import annotations

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from cryptography import x509

from services.ca_sim.authority import load_authority
from shared.protocols import cms
from shared.protocols.cms import CmsError, ContentCipher
from shared.protocols.scep import self_signed_signer
from tests.support.scep_peers import ALL_LEVELS, now, rsa_key, to_ber

LENGTHS = pytest.mark.parametrize("indefinite", [True, False], ids=["indefinite", "definite"])
CHUNKS = pytest.mark.parametrize("chunk", [1, 7, 64])


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return load_authority(tmp_path_factory.mktemp("cms"))


@pytest.fixture(scope="module")
def key():
    return rsa_key()


@pytest.fixture(scope="module")
def cert(key):
    return self_signed_signer(key, x509.Name.from_rfc4514_string("CN=cms.example.net"), now=now())


def ber(der: bytes, *, chunk: int, indefinite: bool, strings: bool = False) -> bytes:
    return to_ber(der, chunk=chunk, depth=ALL_LEVELS, indefinite=indefinite, strings=strings)


@LENGTHS
@CHUNKS
def test_an_envelope_with_encrypted_content_in_chunks_opens(key, cert, indefinite, chunk):
    content = bytes(range(256)) * 3
    envelope = ber(cms.envelope(content, recipient=cert, cipher=ContentCipher.AES256), chunk=chunk,
                   indefinite=indefinite)
    encrypted = asn1_cms.ContentInfo.load(envelope)["content"]["encrypted_content_info"]
    if not indefinite:
        # What asn1crypto alone makes of it: the failure peers saw before.
        with pytest.raises(ValueError, match="method should have been primitive, but constructed"):
            encrypted["encrypted_content"].native  # noqa: B018 - the parse is what fails
    assert cms.open_envelope(envelope, key=key, cert=cert) == (content, ContentCipher.AES256)


@LENGTHS
@CHUNKS
def test_a_signed_data_in_ber_reads_as_its_der(key, cert, indefinite, chunk):
    """The content the signature covers is eContent's octets, whatever the chunks."""
    attributes = [("2.16.840.1.113733.1.9.7", core.PrintableString("4F2A-transaction-0123456789")),
                  ("2.16.840.1.113733.1.9.5", core.OctetString(b"\x01" * 16))]
    content = b"the envelope a SCEP message carries" * 10
    der = cms.sign(content, key=key, cert=cert, digest="sha256", attributes=attributes, now=now())
    message = ber(der, chunk=chunk, indefinite=indefinite, strings=True)
    assert message != der
    read, original = cms.read_signed(message), cms.read_signed(der)
    assert (read.content, read.signer, read.digest) == (content, cert, "sha256")
    assert {oid: [v.dump() for v in values] for oid, values in read.attributes.items()} == \
        {oid: [v.dump() for v in values] for oid, values in original.attributes.items()}
    assert read.attributes["2.16.840.1.113733.1.9.7"][0].native == "4F2A-transaction-0123456789"
    # Trust given by the caller works the same.
    assert cms.read_signed(message, trusted=[cert]).content == content


@LENGTHS
def test_a_certs_only_signed_data_in_ber_gives_its_certificates(ca, indefinite):
    der = cms.certs_only([ca.issuing, ca.root])
    certs, crls = cms.read_certs_only(ber(der, chunk=5, indefinite=indefinite))
    assert set(certs) == {ca.issuing, ca.root} and crls == []


def test_a_ber_message_that_was_tampered_with_still_fails_its_checks(key, cert):
    der = cms.sign(b"payload" * 20, key=key, cert=cert, digest="sha256", attributes=[], now=now())
    message = bytearray(ber(der, chunk=7, indefinite=True))
    message[message.index(b"payload")] ^= 1
    with pytest.raises(CmsError, match="messageDigest"):
        cms.read_signed(bytes(message))


@pytest.mark.parametrize("broken", [b"\x30\x80\x06\x09", b"\x30\x80" + b"\x00" * 3, b"\x24\x80\x02\x01\x05\x00\x00"])
def test_broken_ber_is_a_cms_error(key, cert, broken):
    for read in (cms.read_signed, cms.read_certs_only, lambda d: cms.open_envelope(d, key=key, cert=cert)):
        with pytest.raises(CmsError, match="not a readable|cannot be read"):
            read(broken)

