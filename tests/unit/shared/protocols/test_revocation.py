"""Reading CRLs and OCSP answers: what they say about a certificate, and that anything not
signed by the right CA, stale, about another certificate or unreadable is not trusted."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.protocols.revocation import check_crl, check_ocsp, ocsp_request
from tests.support.clock import START
from tests.support.revocation_ca import TestCa

NOW = START


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


@pytest.fixture(scope="module")
def other_ca() -> TestCa:
    return TestCa("Another CA")


def fresh(ca: TestCa) -> tuple[x509.Certificate, x509.Certificate]:
    """A good and a revoked certificate of ``ca``."""
    good, revoked = ca.issue("good.example.com"), ca.issue("revoked.example.com")
    ca.revoke(revoked, reason=x509.ReasonFlags.superseded, at=NOW - timedelta(hours=2))
    return good, revoked


# --- CRL ------------------------------------------------------------------------------------------

def test_a_crl_says_good_or_revoked_with_time_and_reason(ca):
    good, revoked = fresh(ca)
    crl = ca.crl(this_update=NOW - timedelta(minutes=1))
    answer = check_crl(crl, cert=good, issuer=ca.cert, now=NOW, url="http://[::1]:8080/ca.crl")
    assert (answer.status, answer.source, answer.reason) == ("good", "crl", None)
    assert answer.next_update == NOW - timedelta(minutes=1) + ca.crl_lifetime
    assert "http://[::1]:8080/ca.crl" in answer.detail
    answer = check_crl(crl, cert=revoked, issuer=ca.cert, now=NOW)
    assert (answer.status, answer.reason, answer.revoked_at) == ("revoked", "superseded", NOW - timedelta(hours=2))
    assert f"serial {revoked.serial_number:X} was revoked" in answer.detail


def test_a_pem_crl_and_an_entry_without_reason_are_read(ca):
    cert = ca.issue("no-reason.example.com")
    ca.revoke(cert, reason=None, at=NOW - timedelta(hours=1))
    answer = check_crl(ca.crl(encoding=serialization.Encoding.PEM), cert=cert, issuer=ca.cert, now=NOW)
    assert (answer.status, answer.reason) == ("revoked", "unspecified")


def test_a_stale_crl_is_not_trusted(ca):
    good, revoked = fresh(ca)
    crl = ca.crl(this_update=NOW - timedelta(hours=3), next_update=NOW - timedelta(hours=1))
    for cert in (good, revoked):
        answer = check_crl(crl, cert=cert, issuer=ca.cert, now=NOW)
        assert (answer.status, answer.reason) == ("unknown", "crl_stale")
        assert "expired at its nextUpdate" in answer.detail


def test_a_crl_from_the_future_is_not_trusted(ca):
    good, _ = fresh(ca)
    answer = check_crl(ca.crl(this_update=NOW + timedelta(hours=1)), cert=good, issuer=ca.cert, now=NOW)
    assert (answer.status, answer.reason) == ("unknown", "crl_not_yet_valid")


def test_a_crl_with_a_bad_signature_is_not_trusted(ca):
    good, revoked = fresh(ca)
    forged = ca.crl(signer=ec.generate_private_key(ec.SECP256R1()))
    answer = check_crl(forged, cert=revoked, issuer=ca.cert, now=NOW)
    assert (answer.status, answer.reason) == ("unknown", "crl_bad_signature")
    assert "does not verify with the key of CN=Revocation Test CA" in answer.detail
    # A byte flipped in a good CRL's signature: the same.
    crl = bytearray(ca.crl())
    crl[-3] ^= 0x01
    assert check_crl(bytes(crl), cert=good, issuer=ca.cert, now=NOW).reason in ("crl_bad_signature",
                                                                                "crl_unparseable")


def test_a_crl_of_another_issuer_is_not_trusted(ca, other_ca):
    good, _ = fresh(ca)
    answer = check_crl(other_ca.crl(), cert=good, issuer=ca.cert, now=NOW)
    assert (answer.status, answer.reason) == ("unknown", "crl_wrong_issuer")
    assert "CN=Another CA" in answer.detail
    # Named as the right issuer but signed by the other: the signature tells.
    answer = check_crl(other_ca.crl(issuer_name=ca.cert.subject), cert=good, issuer=ca.cert, now=NOW)
    assert (answer.status, answer.reason) == ("unknown", "crl_bad_signature")


@pytest.mark.parametrize("data", [b"", b"not a crl", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"])
def test_an_unparseable_crl_is_not_trusted(ca, data):
    good, _ = fresh(ca)
    answer = check_crl(data, cert=good, issuer=ca.cert, now=NOW)
    assert (answer.status, answer.source, answer.reason) == ("unknown", "crl", "crl_unparseable")


def test_a_delta_crl_or_an_unknown_critical_extension_cannot_answer_alone(ca):
    good, _ = fresh(ca)
    delta = ca.crl(extensions=[(x509.DeltaCRLIndicator(1), True)])
    assert check_crl(delta, cert=good, issuer=ca.cert, now=NOW).reason == "crl_unsupported"
    strange = ca.crl(extensions=[(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"),
                                                             b"\x05\x00"), True)])
    assert check_crl(strange, cert=good, issuer=ca.cert, now=NOW).reason == "crl_unsupported"


# --- OCSP -----------------------------------------------------------------------------------------

def test_an_ocsp_request_names_the_certificate_and_carries_the_nonce(ca):
    good, _ = fresh(ca)
    request = ocsp.load_der_ocsp_request(ocsp_request(good, ca.cert, nonce=b"n" * 16))
    assert request.serial_number == good.serial_number
    assert request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    plain = ocsp.load_der_ocsp_request(ocsp_request(good, ca.cert))
    assert len(plain.extensions) == 0


def test_ocsp_good_revoked_and_unknown(ca):
    good, revoked = fresh(ca)
    nonce = os.urandom(16)
    answer = check_ocsp(ca.ocsp(good, nonce=nonce), cert=good, issuer=ca.cert, now=NOW, nonce=nonce,
                        url="http://127.0.0.1:9/ocsp")
    assert (answer.status, answer.source, answer.next_update) == ("good", "ocsp", NOW + ca.ocsp_lifetime)
    assert answer.url == "http://127.0.0.1:9/ocsp"
    answer = check_ocsp(ca.ocsp(revoked), cert=revoked, issuer=ca.cert, now=NOW, nonce=None)
    assert (answer.status, answer.reason, answer.revoked_at) == ("revoked", "superseded", NOW - timedelta(hours=2))
    stranger = TestCa("Stranger").issue()
    answer = check_ocsp(ca.ocsp(stranger, serial=stranger.serial_number), cert=good, issuer=ca.cert, now=NOW,
                        nonce=None)
    assert answer.reason == "ocsp_cert_id_mismatch"
    unknown = ca.ocsp(good, status=ocsp.OCSPCertStatus.UNKNOWN)
    answer = check_ocsp(unknown, cert=good, issuer=ca.cert, now=NOW, nonce=None)
    assert (answer.status, answer.reason) == ("unknown", "ocsp_unknown_certificate")


def test_the_nonce_must_be_echoed_when_sent(ca):
    good, _ = fresh(ca)
    sent = b"s" * 16
    other = check_ocsp(ca.ocsp(good, nonce=b"x" * 16), cert=good, issuer=ca.cert, now=NOW, nonce=sent)
    assert (other.status, other.reason) == ("unknown", "ocsp_nonce_mismatch")
    assert "another nonce" in other.detail
    missing = check_ocsp(ca.ocsp(good), cert=good, issuer=ca.cert, now=NOW, nonce=sent)
    assert (missing.status, missing.reason) == ("unknown", "ocsp_nonce_mismatch")


def test_an_answer_about_another_certificate_is_not_taken(ca):
    good, revoked = fresh(ca)
    answer = check_ocsp(ca.ocsp(revoked), cert=good, issuer=ca.cert, now=NOW, nonce=None)
    assert (answer.status, answer.reason) == ("unknown", "ocsp_cert_id_mismatch")


def test_a_delegated_responder_issued_by_the_ca_for_ocsp_signing_is_trusted(ca, other_ca):
    _, revoked = fresh(ca)
    delegate = ca.ocsp_signer()
    answer = check_ocsp(ca.ocsp(revoked, responder=delegate), cert=revoked, issuer=ca.cert, now=NOW, nonce=None)
    assert (answer.status, answer.reason) == ("revoked", "superseded")
    # Without the OCSP-signing usage, or issued by another CA: not authorised.
    no_eku = ca.ocsp_signer(ekus=[ExtendedKeyUsageOID.SERVER_AUTH])
    answer = check_ocsp(ca.ocsp(revoked, responder=no_eku), cert=revoked, issuer=ca.cert, now=NOW, nonce=None)
    assert (answer.status, answer.reason) == ("unknown", "ocsp_unauthorized_responder")
    assert "id-kp-OCSPSigning" in answer.detail
    foreign = ca.ocsp_signer(issuer_key=other_ca.key)
    answer = check_ocsp(ca.ocsp(revoked, responder=foreign), cert=revoked, issuer=ca.cert, now=NOW, nonce=None)
    assert (answer.status, answer.reason) == ("unknown", "ocsp_unauthorized_responder")


def test_an_ocsp_answer_with_a_bad_signature_is_not_trusted(ca):
    good, _ = fresh(ca)
    # Changed after the CA signed it.
    forged = ca.ocsp(good, tampered=True)
    answer = check_ocsp(forged, cert=good, issuer=ca.cert, now=NOW, nonce=None)
    assert (answer.status, answer.reason) == ("unknown", "ocsp_bad_signature")
    forged = ca.ocsp(good, responder=ca.ocsp_signer(), tampered=True)
    assert check_ocsp(forged, cert=good, issuer=ca.cert, now=NOW, nonce=None).reason == "ocsp_bad_signature"
    # Signed by another CA altogether, naming itself.
    stranger = TestCa("Stranger")
    answer = check_ocsp(stranger.ocsp(good), cert=good, issuer=ca.cert, now=NOW, nonce=None)
    assert answer.status == "unknown" and answer.reason in ("ocsp_unauthorized_responder", "ocsp_cert_id_mismatch")


def test_stale_future_unsuccessful_and_unparseable_ocsp_answers_are_not_trusted(ca):
    good, _ = fresh(ca)
    stale = ca.ocsp(good, this_update=NOW - timedelta(hours=2), next_update=NOW - timedelta(hours=1))
    assert check_ocsp(stale, cert=good, issuer=ca.cert, now=NOW, nonce=None).reason == "ocsp_stale"
    future = ca.ocsp(good, this_update=NOW + timedelta(hours=1))
    assert check_ocsp(future, cert=good, issuer=ca.cert, now=NOW, nonce=None).reason == "ocsp_not_yet_valid"
    try_later = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(
        serialization.Encoding.DER)
    answer = check_ocsp(try_later, cert=good, issuer=ca.cert, now=NOW, nonce=None)
    assert (answer.reason, answer.detail) == ("ocsp_not_successful", "the OCSP responder answered try_later")
    assert check_ocsp(b"\x30\x03\x0a\x01", cert=good, issuer=ca.cert, now=NOW, nonce=None).reason == (
        "ocsp_unparseable")
