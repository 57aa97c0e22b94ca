"""The pure SCEP codec, both directions: a device builds a request, the CA parses it and
answers a CertRep, the device reads the answer. OpenSSL checks our CMS; broken, BER and
fuzzed messages end in one ScepDecodeError, never in another exception. BER (strings in
constructed chunks, definite or indefinite lengths) reads as the DER it stands for."""

from __future__ import annotations

import random
import subprocess

import pytest
from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.ca_sim.authority import load_authority
from services.ca_sim.profiles import DEFAULT
from shared.protocols import cms as scep_cms
from shared.protocols import scep
from shared.protocols.scep import ContentCipher, FailInfo, MessageType, PkiStatus, ScepDecodeError
from tests.support.ca_peers import spki
from tests.support.scep_peers import ALL_LEVELS, ber_cert_rep, ber_pkcs_req, csr_for, now, rsa_key, to_ber

CHALLENGE = "Codec-Challenge-1"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return load_authority(tmp_path_factory.mktemp("scep-codec"))


@pytest.fixture(scope="module")
def responder(ca):
    return scep.Responder(key=ca.issuing_key, cert=ca.issuing)


@pytest.fixture(scope="module")
def device_key():
    return rsa_key()


@pytest.fixture(scope="module")
def other_key():
    return rsa_key()


def requester(ca, key, *, cipher=ContentCipher.AES128, digest="sha256", cert=None) -> scep.Requester:
    signer = cert or scep.self_signed_signer(key, x509.Name.from_rfc4514_string("CN=fw.example.net"), now=now())
    return scep.Requester(key=key, cert=signer, recipient=ca.issuing, cipher=cipher, digest=digest)


def pkcs_req(ca, key, **kw) -> tuple[bytes, scep.Requester, bytes, x509.CertificateSigningRequest]:
    req = requester(ca, key, **kw)
    csr = csr_for(key, "fw.example.net", challenge=CHALLENGE)
    nonce = scep.new_nonce()
    der = scep.build_pkcs_req(req, csr, transaction_id=scep.transaction_id_for(key.public_key()),
                              sender_nonce=nonce, now=now())
    return der, req, nonce, csr


def signer_info(der: bytes) -> cms.SignerInfo:
    return cms.ContentInfo.load(der)["content"]["signer_infos"][0]


# --- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("digest", ["sha1", "sha256"])
@pytest.mark.parametrize("cipher", [ContentCipher.AES128, ContentCipher.AES256, ContentCipher.DES3,
                                    ContentCipher.DES])
def test_enrollment_round_trip(ca, responder, device_key, cipher, digest):
    der, req, nonce, csr = pkcs_req(ca, device_key, cipher=cipher, digest=digest)
    request = scep.parse_pki_message(der, ca.issuing_key, ca.issuing)
    assert request.message_type is MessageType.PKCS_REQ
    assert (request.cipher, request.digest) == (cipher, digest)
    assert request.csr == csr and request.challenge_password == CHALLENGE
    assert request.sender_nonce == nonce and request.signer_cert == req.cert
    assert request.transaction_id == scep.transaction_id_for(device_key.public_key())

    cert = ca.issue(csr, DEFAULT)
    reply = scep.build_cert_rep(responder, transaction_id=request.transaction_id, recipient_nonce=nonce,
                                status=PkiStatus.SUCCESS, now=now(), digest=request.digest, certs=[cert],
                                recipient=request.signer_cert, cipher=request.cipher)
    # strongSwan's quirk: the SignerInfo names plain rsaEncryption; the digest echoes the request's.
    info = signer_info(reply)
    assert info["signature_algorithm"]["algorithm"].dotted == "1.2.840.113549.1.1.1"
    assert info["digest_algorithm"]["algorithm"].native == digest
    rep = scep.parse_cert_rep(reply, req, transaction_id=request.transaction_id, sender_nonce=nonce)
    assert rep.status is PkiStatus.SUCCESS and rep.certs == (cert,)
    assert rep.recipient_nonce == nonce and rep.sender_nonce != nonce
    assert spki(rep.certs[0].public_key()) == spki(device_key.public_key())


def test_reply_envelope_uses_the_requesters_cipher(ca, responder, device_key):
    for cipher, oid in ((ContentCipher.DES3, "1.2.840.113549.3.7"), (ContentCipher.AES256, "2.16.840.1.101.3.4.1.42")):
        der, req, nonce, csr = pkcs_req(ca, device_key, cipher=cipher)
        request = scep.parse_pki_message(der, ca.issuing_key, ca.issuing)
        reply = scep.build_cert_rep(responder, transaction_id=request.transaction_id, recipient_nonce=nonce,
                                    status=PkiStatus.SUCCESS, now=now(), certs=[ca.issuing],
                                    recipient=request.signer_cert, cipher=request.cipher)
        inner = cms.ContentInfo.load(cms.ContentInfo.load(reply)["content"]["encap_content_info"]["content"].native)
        algorithm = inner["content"]["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"]
        assert algorithm.dotted == oid


def test_renewal_poll_get_cert_and_get_crl_round_trip(ca, device_key, other_key):
    old = ca.issue(csr_for(device_key, "fw.example.net"), DEFAULT)
    renewing = requester(ca, device_key, cert=old)
    new_csr = csr_for(other_key, "fw.example.net")
    common = dict(transaction_id="4711", sender_nonce=scep.new_nonce(), now=now())
    renewal = scep.parse_pki_message(scep.build_renewal_req(renewing, new_csr, **common), ca.issuing_key, ca.issuing)
    assert renewal.message_type is MessageType.RENEWAL_REQ and renewal.signer_cert == old and renewal.csr == new_csr
    assert renewal.challenge_password is None

    poll = scep.parse_pki_message(
        scep.build_cert_poll(renewing, issuer=ca.issuing.subject, subject=new_csr.subject, **common),
        ca.issuing_key, ca.issuing)
    assert poll.message_type is MessageType.CERT_POLL
    assert poll.issuer_and_subject == (ca.issuing.subject, new_csr.subject)

    for build, kind in ((scep.build_get_cert, MessageType.GET_CERT), (scep.build_get_crl, MessageType.GET_CRL)):
        parsed = scep.parse_pki_message(build(renewing, issuer=ca.issuing.subject, serial=old.serial_number, **common),
                                        ca.issuing_key, ca.issuing)
        assert parsed.message_type is kind and parsed.issuer_and_serial == (ca.issuing.subject, old.serial_number)


def test_failure_and_pending_replies(ca, responder, device_key):
    req = requester(ca, device_key)
    nonce = scep.new_nonce()
    failure = scep.build_cert_rep(responder, transaction_id="99", recipient_nonce=nonce, status=PkiStatus.FAILURE,
                                  fail_info=FailInfo.BAD_TIME, fail_info_text="set the clock", now=now())
    rep = scep.parse_cert_rep(failure, req, transaction_id="99", sender_nonce=nonce)
    assert (rep.status, rep.fail_info, rep.fail_info_text) == (PkiStatus.FAILURE, FailInfo.BAD_TIME, "set the clock")
    pending = scep.build_cert_rep(responder, transaction_id="99", recipient_nonce=nonce, status=PkiStatus.PENDING,
                                  now=now())
    assert scep.parse_cert_rep(pending, req).status is PkiStatus.PENDING
    # An answer to another request, or from a signer we do not trust, is refused.
    with pytest.raises(ScepDecodeError, match="recipientNonce"):
        scep.parse_cert_rep(pending, req, sender_nonce=scep.new_nonce())
    with pytest.raises(ScepDecodeError, match="transaction"):
        scep.parse_cert_rep(pending, req, transaction_id="100")
    with pytest.raises(ScepDecodeError, match="expected certificate"):
        scep.parse_cert_rep(pending, req, signers=[ca.root])


def test_openssl_verifies_our_signatures_and_opens_our_envelopes(ca, responder, device_key, tmp_path):
    der, req, nonce, csr = pkcs_req(ca, device_key, cipher=ContentCipher.DES3)
    reply = scep.build_cert_rep(responder, transaction_id="1", recipient_nonce=nonce, status=PkiStatus.SUCCESS,
                                now=now(), certs=[ca.issuing], recipient=req.cert, cipher=ContentCipher.DES3)
    for label, message in (("request", der), ("reply", reply)):
        (tmp_path / f"{label}.der").write_bytes(message)
        subprocess.run(["openssl", "cms", "-verify", "-noverify", "-binary", "-inform", "DER", "-in",
                        str(tmp_path / f"{label}.der"), "-out", str(tmp_path / f"{label}.env")],
                       check=True, capture_output=True)
    (tmp_path / "key.pem").write_bytes(device_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "signer.pem").write_bytes(req.cert.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in",
                           str(tmp_path / "reply.env"), "-recip", str(tmp_path / "signer.pem"), "-inkey",
                           str(tmp_path / "key.pem")], check=True, capture_output=True)
    certs = cms.ContentInfo.load(done.stdout)["content"]["certificates"]
    assert [c.chosen.dump() for c in certs] == [ca.issuing.public_bytes(serialization.Encoding.DER)]


def test_ber_input_is_accepted(ca, device_key):
    der, _, nonce, csr = pkcs_req(ca, device_key)
    ber = to_ber(der)
    assert ber != der and ber[:2] == b"\x30\x80"
    request = scep.parse_pki_message(ber, ca.issuing_key, ca.issuing)
    assert request.csr == csr and request.sender_nonce == nonce


@pytest.mark.parametrize("indefinite", [True, False], ids=["indefinite", "definite"])
def test_a_pkcs_req_from_a_ber_encoder_is_read_like_its_der(ca, device_key, indefinite):
    """encryptedContent, eContent and the signed attributes' strings in constructed chunks."""
    req = requester(ca, device_key)
    csr = csr_for(device_key, "fw.example.net", challenge=CHALLENGE)
    nonce = scep.new_nonce()
    for chunk in (1, 7, 100):
        message = ber_pkcs_req(req, csr, transaction_id="BER-0123456789abcdef", sender_nonce=nonce, chunk=chunk,
                               indefinite=indefinite)
        request = scep.parse_pki_message(message, ca.issuing_key, ca.issuing)
        assert (request.message_type, request.transaction_id, request.sender_nonce) == (
            MessageType.PKCS_REQ, "BER-0123456789abcdef", nonce)
        assert request.csr == csr and request.challenge_password == CHALLENGE and request.signer_cert == req.cert


def test_a_der_message_carrying_a_ber_envelope_is_read(ca, device_key):
    """The usual shape from Java peers: the SignedData in DER, its envelope with a constructed
    encryptedContent of definite length (what asn1crypto alone refuses)."""
    req = requester(ca, device_key)
    csr = csr_for(device_key, "fw.example.net", challenge=CHALLENGE)
    sealed = to_ber(scep_cms.envelope(csr.public_bytes(serialization.Encoding.DER), recipient=ca.issuing,
                                      cipher=ContentCipher.AES128), chunk=64, depth=ALL_LEVELS, indefinite=False)
    attributes = [(scep.MESSAGE_TYPE, core.PrintableString("19")), (scep.TRANSACTION_ID, core.PrintableString("42")),
                  (scep.SENDER_NONCE, core.OctetString(b"n" * 16))]
    der = scep_cms.sign(sealed, key=device_key, cert=req.cert, digest="sha256", attributes=attributes, now=now())
    assert scep.parse_pki_message(der, ca.issuing_key, ca.issuing).csr == csr


@pytest.mark.parametrize("indefinite", [True, False], ids=["indefinite", "definite"])
def test_a_cert_rep_from_a_ber_encoder_is_read_like_its_der(ca, responder, device_key, indefinite):
    der, req, nonce, csr = pkcs_req(ca, device_key)
    request = scep.parse_pki_message(der, ca.issuing_key, ca.issuing)
    cert = ca.issue(csr, DEFAULT)
    success = scep.build_cert_rep(responder, transaction_id=request.transaction_id, recipient_nonce=nonce,
                                  status=PkiStatus.SUCCESS, now=now(), certs=[cert], recipient=req.cert,
                                  cipher=req.cipher)
    failure = scep.build_cert_rep(responder, transaction_id=request.transaction_id, recipient_nonce=nonce,
                                  status=PkiStatus.FAILURE, fail_info=FailInfo.BAD_TIME,
                                  fail_info_text="set the device's clock", now=now())
    again = dict(signer=ca.issuing, key=ca.issuing_key, cert=ca.issuing, chunk=3, indefinite=indefinite)
    rep = scep.parse_cert_rep(ber_cert_rep(success, **again), req, transaction_id=request.transaction_id,
                              sender_nonce=nonce)
    assert rep.status is PkiStatus.SUCCESS and rep.certs == (cert,) and rep.recipient_nonce == nonce
    rep = scep.parse_cert_rep(ber_cert_rep(failure, **again), req, transaction_id=request.transaction_id,
                              sender_nonce=nonce)
    assert (rep.status, rep.fail_info, rep.fail_info_text) == (PkiStatus.FAILURE, FailInfo.BAD_TIME,
                                                               "set the device's clock")


@pytest.mark.parametrize("transaction_id", ["1234567890123456789", "5DDD96D399E4C00F54FEE007786D78679959B1C3",
                                            "ab-12.cd"])
def test_transaction_ids_are_printable_strings(ca, device_key, transaction_id):
    req = requester(ca, device_key)
    der = scep.build_pkcs_req(req, csr_for(device_key, "fw"), transaction_id=transaction_id,
                              sender_nonce=scep.new_nonce(), now=now())
    assert scep.parse_pki_message(der, ca.issuing_key, ca.issuing).transaction_id == transaction_id


# --- refusals -------------------------------------------------------------------------------

def test_a_message_for_another_ca_is_bad_message_check_with_its_ids(ca, device_key, tmp_path):
    other = load_authority(tmp_path / "other")
    der, _, nonce, _ = pkcs_req(ca, device_key)
    with pytest.raises(ScepDecodeError) as err:
        scep.parse_pki_message(der, other.issuing_key, other.issuing)
    assert err.value.fail_info is FailInfo.BAD_MESSAGE_CHECK and err.value.code == "bad_message_check"
    assert err.value.status == 400
    # Enough was read to answer with a CertRep.
    assert err.value.transaction_id == scep.transaction_id_for(device_key.public_key())
    assert err.value.sender_nonce == nonce and err.value.digest == "sha256"


def test_a_tampered_signature_is_bad_message_check(ca, device_key):
    der, _, _, _ = pkcs_req(ca, device_key)
    signature = signer_info(der)["signature"].native
    tampered = der.replace(signature, signature[:-1] + bytes([signature[-1] ^ 1]))
    with pytest.raises(ScepDecodeError, match="signature does not verify") as err:
        scep.parse_pki_message(tampered, ca.issuing_key, ca.issuing)
    assert err.value.fail_info is FailInfo.BAD_MESSAGE_CHECK and err.value.transaction_id


def test_a_bad_transaction_id_is_bad_request(ca, device_key):
    req = requester(ca, device_key)
    with pytest.raises(ScepDecodeError):
        scep.build_pkcs_req(req, csr_for(device_key, "fw"), transaction_id="", sender_nonce=scep.new_nonce(),
                            now=now())


FUZZ_SEED = 20240604


def test_fuzzed_messages_raise_only_scep_decode_errors(ca, device_key):
    """Random bytes, every truncation step, bit flips and BER variants: parse either succeeds
    or raises ScepDecodeError with a failInfo; nothing else escapes."""
    der, _, _, _ = pkcs_req(ca, device_key)
    rng = random.Random(FUZZ_SEED)
    variants = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(40)]
    variants += [der[:n] for n in range(0, len(der), max(1, len(der) // 60))]
    for _ in range(120):
        flipped = bytearray(der)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        variants.append(bytes(flipped))
    variants += [to_ber(der, chunk=c) for c in (1, 3, 64)]
    variants += [b"", b"\x30\x80\x00\x00", b"\x30\x84\xff\xff\xff\xff", b"\x30\x80" * 5000]
    outcomes = {"ok": 0, "refused": 0}
    for message in variants:
        try:
            scep.parse_pki_message(message, ca.issuing_key, ca.issuing)
            outcomes["ok"] += 1
        except ScepDecodeError as exc:
            assert isinstance(exc.fail_info, FailInfo) and exc.message
            outcomes["refused"] += 1
    assert outcomes["refused"] > 150 and outcomes["ok"] >= 3  # the BER variants parse


# --- GetCACaps and GetCACert ----------------------------------------------------------------

def test_capabilities_parse_and_pick_the_strongest():
    caps = scep.parse_caps("aes\r\nPOSTPKIOperation\nsha-256\nSHA-512\nSomethingNew\n\n")
    assert caps == {"AES", "POSTPKIOperation", "SHA-256", "SHA-512", "SomethingNew"}
    assert scep.preferred_algorithms(caps) == (ContentCipher.AES128, "sha512")
    assert scep.preferred_algorithms({"SCEPStandard"}) == (ContentCipher.AES128, "sha256")
    assert scep.preferred_algorithms({"DES3", "SHA-1"}) == (ContentCipher.DES3, "sha1")
    assert scep.preferred_algorithms(set()) == (ContentCipher.DES, "md5")
    assert scep.format_caps(["AES", "SHA-256"]) == "AES\nSHA-256\n"


def test_ca_certificates_one_or_several(ca):
    body, content_type = scep.encode_ca_certs([ca.issuing])
    assert content_type == scep.CA_CERT and scep.decode_ca_certs(body, content_type) == [ca.issuing]
    body, content_type = scep.encode_ca_certs([ca.issuing, ca.root])
    # A SET OF in DER: the order is the encoding's, not ours (clients tell RA and CA by their flags).
    assert content_type == scep.CA_RA_CERT and set(scep.decode_ca_certs(body, content_type)) == {ca.issuing, ca.root}
    for indefinite in (True, False):
        ber = to_ber(body, chunk=5, depth=ALL_LEVELS, indefinite=indefinite)
        assert set(scep.decode_ca_certs(ber, f"{scep.CA_RA_CERT}; charset=binary")) == {ca.issuing, ca.root}


def test_ca_certificates_labelled_wrongly_or_not_at_all_are_read_by_their_form(ca):
    single = ca.issuing.public_bytes(serialization.Encoding.DER)
    several = scep.encode_ca_certs([ca.issuing, ca.root])[0]
    for content_type in (None, "application/octet-stream", scep.CA_CERT, scep.CA_RA_CERT):
        assert scep.decode_ca_certs(single, content_type) == [ca.issuing]
        assert set(scep.decode_ca_certs(several, content_type)) == {ca.issuing, ca.root}


@pytest.mark.parametrize(("body", "content_type", "problem"), [
    (b"nonsense", scep.CA_RA_CERT, r"\(application/x-x509-ca-ra-cert\) cannot be read: the certificates cannot be"),
    (b"nonsense", scep.CA_CERT, r"\(application/x-x509-ca-cert\) cannot be read"),
    (b"", None, r"\(no content type\) cannot be read"),
])
def test_unreadable_ca_certificates_are_refused(body, content_type, problem):
    with pytest.raises(ScepDecodeError, match=problem) as err:
        scep.decode_ca_certs(body, content_type)
    assert err.value.code == "bad_request"


def test_a_certs_only_answer_without_certificates_is_refused():
    with pytest.raises(ScepDecodeError, match="holds no certificate"):
        scep.decode_ca_certs(scep_cms.certs_only([]), scep.CA_RA_CERT)


def test_requester_and_responder_need_rsa_keys(ca):
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TypeError, match="RSA"):
        scep.Requester(key=key, cert=ca.issuing, recipient=ca.issuing)
    with pytest.raises(ValueError, match="digest"):
        scep.Requester(key=ca.issuing_key, cert=ca.issuing, recipient=ca.issuing, digest="whirlpool")
    assert FailInfo.BAD_MESSAGE_CHECK.rfc_name == "badMessageCheck"
