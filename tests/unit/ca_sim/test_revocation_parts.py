"""The pure parts of the CA simulator's revocation: how a GET OCSP request, a serial and a
URL host are read, how the ledger answers revocations (refusals with their codes, a hold made
permanent, the generation a CRL is checked against, CRL numbers that only grow), and the CRL
built from it. The HTTP side is in tests/integration/ca_sim/test_revocation.py."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from services.ca_sim import issuance
from services.ca_sim.crl import build_crl
from services.ca_sim.ledger import Ledger, Revocation, StoredCrl, parse_serial
from services.ca_sim.revocation_server import decode_get_request
from services.ca_sim.service import revocation_urls, url_host
from shared.errors import ConfigurationError, ConflictError, NotFoundError

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def issuer():
    key = ec.generate_private_key(ec.SECP256R1())
    return issuance.build_root(key, now=NOW), key


def certificate(issuer, serial: int) -> x509.Certificate:
    cert, key = issuer
    return (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN=fw-{serial}"))
            .issuer_name(cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1)).sign(key, hashes.SHA256()))


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite")


# --- reading what clients send ----------------------------------------------------------------

def test_a_get_request_is_read_in_either_base64_alphabet_encoded_or_not():
    der = bytes(range(256)) * 2  # every byte value: '+', '/' and '=' all occur in standard base64
    std = base64.b64encode(der).decode()
    assert "+" in std and "/" in std
    for encoded in (std, quote(std, safe=""), quote(std, safe="/"), base64.urlsafe_b64encode(der).decode().rstrip("="),
                    std.replace("+", " ")):
        assert decode_get_request(encoded) == der, encoded
    for garbage in ("not*base64", "%ZZ", "a", "ab$c"):
        assert decode_get_request(garbage) is None, garbage


@pytest.mark.parametrize(("text", "serial"), [
    ("1a2b", 0x1A2B), ("0x1A2B", 0x1A2B), ("1A:2B", 0x1A2B), ("serial=1A2B", 0x1A2B), (" 00ff ", 255)])
def test_serials_are_read_as_openssl_and_the_ca_print_them(text, serial):
    assert parse_serial(text) == serial


@pytest.mark.parametrize("text", ["", "xyz", "-1", "0x", "12 34"])
def test_a_serial_that_is_not_hex_is_a_usage_error(text):
    with pytest.raises(ConfigurationError) as err:
        parse_serial(text)
    assert err.value.code == "bad_serial"


@pytest.mark.parametrize(("host", "in_url"), [
    ("::1", "[::1]"), ("[2001:db8::7]", "[2001:db8::7]"), ("2001:0db8:0:0::7", "[2001:db8::7]"),
    ("127.0.0.1", "127.0.0.1"), ("CA.Example.NET", "ca.example.net"), ("localhost", "localhost")])
def test_url_hosts_put_ipv6_literals_in_brackets(host, in_url):
    assert url_host(host) == in_url


@pytest.mark.parametrize("host", ["", "http://ca", "ca:80", "a b", "user@ca", "-ca.example.net", "[::1", "ca/x"])
def test_url_hosts_refuse_what_is_neither_address_nor_name(host):
    with pytest.raises(ValueError, match="neither an IP address nor a host name"):
        url_host(host)


def test_revocation_urls_follow_the_first_host_or_the_public_one():
    assert revocation_urls(["::1", "127.0.0.1"], 8080).crl == "http://[::1]:8080/crl/issuing.crl"
    assert revocation_urls(["::"], 80).ocsp == "http://[::1]:80/ocsp"
    assert revocation_urls(["0.0.0.0"], 80).ocsp == "http://127.0.0.1:80/ocsp"
    assert revocation_urls(["127.0.0.1"], 80, "2001:db8::7").ocsp == "http://[2001:db8::7]:80/ocsp"


# --- the ledger --------------------------------------------------------------------------------

def test_revoking_changes_the_generation_and_what_lookup_says(ledger, issuer):
    cert = certificate(issuer, 0x51)
    ledger.record(cert, kind="end-entity", profile="default", now=NOW)
    assert ledger.lookup(0x51).revocation is None and ledger.lookup(0x52) is None
    before = ledger.generation()
    revocation, changed = ledger.revoke(0x51, reason="keyCompromise", now=NOW + timedelta(microseconds=7))
    assert changed and revocation == Revocation(serial=0x51, subject="CN=fw-81", reason="keyCompromise", revoked_at=NOW)
    assert ledger.generation() == before + 1
    assert ledger.lookup(0x51).revocation == revocation
    assert revocation.reason_flag is x509.ReasonFlags.key_compromise
    # The same again: nothing changes, not even the generation.
    assert ledger.revoke(0x51, reason="keyCompromise") == (revocation, False)
    assert ledger.generation() == before + 1


def test_revocations_are_refused_with_their_codes(ledger, issuer):
    with pytest.raises(NotFoundError) as err:
        ledger.revoke(0x99)
    assert err.value.code == "unknown_serial"
    ledger.record(certificate(issuer, 0x61), kind="end-entity")
    with pytest.raises(ConfigurationError) as bad:
        ledger.revoke(0x61, reason="privilegeWithdrawn")
    assert bad.value.code == "bad_reason"
    ledger.revoke(0x61, reason="superseded")
    with pytest.raises(ConflictError) as again:
        ledger.revoke(0x61, reason="keyCompromise")
    assert again.value.code == "already_revoked" and "only a certificateHold may be changed" in again.value.message


def test_a_hold_becomes_permanent_keeping_its_time_and_a_given_certificate_is_recorded(ledger, issuer):
    cert = certificate(issuer, 0x71)
    held, _ = ledger.revoke(0x71, reason="certificateHold", now=NOW, cert=cert)  # never recorded before
    final, changed = ledger.revoke(0x71, reason="cessationOfOperation", now=NOW + timedelta(hours=1))
    assert changed and final.revoked_at == held.revoked_at == NOW and final.reason == "cessationOfOperation"
    assert [r.serial for r in ledger.revocations()] == [0x71]
    unspecified = Revocation(serial=1, subject="", reason="unspecified", revoked_at=NOW)
    assert unspecified.reason_flag is None  # RFC 5280: leave the reason out rather than say "unspecified"


def test_crl_numbers_only_grow_and_the_highest_stored_crl_wins(ledger):
    first, second = ledger.next_crl_number(), ledger.next_crl_number()
    assert second == first + 1
    newer = StoredCrl(number=second, generation=0, this_update=NOW, next_update=NOW + timedelta(hours=1))
    older = StoredCrl(number=first, generation=0, this_update=NOW, next_update=NOW + timedelta(hours=1))
    ledger.store_crl(newer, b"newer")
    ledger.store_crl(older, b"older")  # a slower builder finishing late does not go back
    assert ledger.stored_crl() == newer and ledger.stored_crl_der(second) == b"newer"


def test_the_crl_lists_every_revocation_with_its_date_and_reason(issuer):
    cert, key = issuer
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    revocations = [Revocation(serial=n + 1, subject="", reason=("unspecified", "superseded")[n % 2],
                              revoked_at=NOW - timedelta(minutes=n)) for n in range(1000)]
    crl = x509.load_der_x509_crl(build_crl(issuer=cert, issuer_key=key, revocations=revocations, number=42,
                                           this_update=NOW, next_update=NOW + timedelta(hours=1)))
    assert len(crl) == 1000 and crl.is_signature_valid(key.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    assert crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    entry = crl.get_revoked_certificate_by_serial_number(2)
    assert entry.revocation_date_utc == NOW - timedelta(minutes=1)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.superseded
    assert len(crl.get_revoked_certificate_by_serial_number(1).extensions) == 0
