"""The rules an enrollment object must satisfy, per enrollment type: what each type accepts
and the column values it is stored with (URLs without surrounding white space, fingerprints
lower-case without colons, secrets never among the columns), and what each type refuses,
with the stable code and a message saying what to change."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.controller.api.schemas.enrollment_objects import EnrollmentObjectCreate
from services.controller.rules.enrollment_objects import object_columns, secret_of
from shared.enrollment import EnrollmentParameters
from shared.errors import ValidationError
from shared.pki import DeviceIdentity, generate_private_key, self_signed_certificate, to_pem

URLS = {"est": "https://ca.example.com/.well-known/est/", "scep": "http://ca.example.com/cgi-bin/pkiclient.exe"}
SHA256_COLONS = ":".join(["AB"] * 32)


@pytest.fixture(scope="module")
def ca_pem() -> str:
    key = generate_private_key("ecdsa", 256)
    params = EnrollmentParameters(name="ca", enrollment_type="self_signed", key_type="ecdsa", key_size=256)
    cert = self_signed_certificate(key, params, DeviceIdentity(serial="CA-1", fqdn="ca.example.com"),
                                   now=datetime(2030, 1, 1, tzinfo=UTC), serial=1)
    return to_pem(cert)


def create(kind: str, **fields) -> EnrollmentObjectCreate:
    base = {"name": "vpn", "enrollment_type": kind, "key_type": "ecdsa", "key_size": 256}
    if kind in URLS:
        base["enrollment_url"] = URLS[kind]
    return EnrollmentObjectCreate(**{**base, **fields})


def refusal(data: EnrollmentObjectCreate) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        object_columns(data)
    return caught.value


# --- accepted, and how it is stored ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["self_signed", "est", "scep", "manual", "pkcs12"])
def test_every_type_is_stored_with_plain_values_and_without_secrets(kind):
    columns = object_columns(create(kind, name="vpn-1"))
    assert (columns["name"], columns["enrollment_type"], columns["key_type"]) == ("vpn-1", kind, "ecdsa")
    assert type(columns["enrollment_type"]) is str and type(columns["key_type"]) is str
    assert "password" not in columns and "challenge_password" not in columns
    assert (columns["fingerprint"], columns["crl_urls"]) == ("", [])
    assert columns["enrollment_url"] == URLS.get(kind, "")


def test_est_keeps_its_url_trimmed_its_fingerprint_normalised_and_its_own_ca_limits():
    data = create("est", enrollment_url="  https://[2001:db8::5]:8443/.well-known/est/asa \t",
                  fingerprint=f" {SHA256_COLONS} ", username="enroller", password="Est-s3cret",
                  ca_concurrency_limit=8, ca_rate_limit=2.5, retry_period_minutes=60, retry_count=0)
    columns = object_columns(data)
    assert columns["enrollment_url"] == "https://[2001:db8::5]:8443/.well-known/est/asa"
    assert columns["fingerprint"] == "ab" * 32
    assert (columns["username"], columns["ca_concurrency_limit"], columns["ca_rate_limit"]) == ("enroller", 8, 2.5)
    assert (columns["retry_period_minutes"], columns["retry_count"]) == (60, 0)
    assert "Est-s3cret" not in repr(columns)
    assert secret_of(data) == "Est-s3cret"


def test_scep_takes_a_plain_http_url_and_carries_its_challenge_as_the_secret():
    data = create("scep", enrollment_url="HTTP://ca.example.com/scep", challenge_password="otp-1",
                  retry_period_minutes=1, retry_count=100)
    columns = object_columns(data)
    assert columns["enrollment_url"] == "HTTP://ca.example.com/scep"  # the scheme's case does not matter
    assert "otp-1" not in repr(columns)
    assert secret_of(data) == "otp-1"


@pytest.mark.parametrize(("kind", "sent", "secret"), [
    ("est", {"password": ""}, ""),  # an empty secret removes the stored one
    ("est", {}, None),  # not sent: the stored one stays
    ("scep", {"challenge_password": ""}, ""),
    ("scep", {}, None),
    ("self_signed", {}, None),
    ("manual", {}, None),
])
def test_the_secret_is_told_apart_from_no_secret_sent(kind, sent, secret):
    assert secret_of(create(kind, **sent)) == secret


def test_manual_takes_the_ca_certificate_and_may_be_ca_only(ca_pem):
    columns = object_columns(create("manual", ca_certificate_pem=ca_pem, ca_only=True))
    assert (columns["ca_certificate_pem"], columns["ca_only"]) == (ca_pem, True)
    assert object_columns(create("manual"))["ca_only"] is False  # the operator imports the CA later


@pytest.mark.parametrize("kind", ["self_signed", "est", "scep", "manual", "pkcs12"])
def test_revocation_urls_are_checked_and_trimmed_for_every_type(kind):
    columns = object_columns(create(kind, ocsp_url=" http://ocsp.example.com/ ",
                                    crl_urls=["http://crl.example.com/a.crl ", " http://[2001:db8::7]/b.crl"]))
    assert columns["ocsp_url"] == "http://ocsp.example.com/"
    assert columns["crl_urls"] == ["http://crl.example.com/a.crl", "http://[2001:db8::7]/b.crl"]


# --- refused, per type --------------------------------------------------------------------------

NOT_FOR_OTHER_TYPES = [
    ("enrollment_url", "https://ca.example.com/", "EST and SCEP"),
    ("username", "enroller", "EST and SCEP"),
    ("ca_concurrency_limit", 4, "EST and SCEP"),
    ("ca_rate_limit", 1.5, "EST and SCEP"),
    ("password", "s3cret", "EST"),
    ("challenge_password", "s3cret", "SCEP"),
]


@pytest.mark.parametrize("kind", ["self_signed", "manual", "pkcs12"])
@pytest.mark.parametrize(("field", "value", "applies_to"), NOT_FOR_OTHER_TYPES)
def test_ca_fields_on_a_type_that_talks_to_no_ca_are_refused(kind, field, value, applies_to):
    error = refusal(create(kind, **{field: value}))
    assert error.code == "field_not_applicable"
    assert error.message == f"{field} applies to {applies_to} enrollment only, not {kind}: leave it out"
    if field in ("password", "challenge_password"):
        assert value not in error.message  # a secret sent to the wrong place is not echoed


@pytest.mark.parametrize(("kind", "field", "applies_to"), [
    ("est", "challenge_password", "SCEP"),
    ("scep", "password", "EST"),
])
def test_the_other_protocols_secret_is_refused(kind, field, applies_to):
    error = refusal(create(kind, **{field: "Wrong-Place-7"}))
    assert (error.code, error.message) == (
        "field_not_applicable", f"{field} applies to {applies_to} enrollment only, not {kind}: leave it out")
    assert "Wrong-Place-7" not in error.message


@pytest.mark.parametrize("kind", ["self_signed", "est", "scep", "pkcs12"])
def test_a_ca_certificate_belongs_to_manual_enrollment_only(kind, ca_pem):
    error = refusal(create(kind, ca_certificate_pem=ca_pem, ca_only=True))
    assert (error.code, error.message) == (
        "field_not_applicable", f"ca_certificate_pem applies to manual enrollment only, not {kind}: leave it out")


@pytest.mark.parametrize(("kind", "fields", "code", "says"), [
    ("est", {"enrollment_url": "  "}, "enrollment_url_required",
     "EST enrollment needs enrollment_url, the CA's URL, e.g. https://ca.example.com/"),
    ("scep", {"enrollment_url": ""}, "enrollment_url_required", "SCEP enrollment needs enrollment_url"),
    ("est", {"enrollment_url": "http://ca.example.com/"}, "est_url_not_https",
     "EST runs over HTTPS only: use an https:// enrollment_url"),
    ("scep", {"enrollment_url": "https://ca.example.com/"}, "scep_url_not_http",
     "SCEP runs over plain HTTP: use an http:// enrollment_url"),
    ("est", {"enrollment_url": "https://2001:db8::5/"}, "invalid_url", "square brackets"),
    ("scep", {"enrollment_url": "http://ca.example.com:70000/"}, "invalid_url", "port"),
    ("est", {"fingerprint": "ab" * 31}, "invalid_fingerprint", "64 hex digits"),
    ("scep", {"retry_period_minutes": 0}, "invalid_retry_period", "retry_period_minutes must be 1 to 60"),
    ("scep", {"retry_period_minutes": 61}, "invalid_retry_period", "1 to 60"),
    ("est", {"retry_count": -1}, "invalid_retry_count", "retry_count must be 0 to 100"),
    ("est", {"retry_count": 101}, "invalid_retry_count", "0 to 100"),
    ("manual", {"ca_only": True}, "ca_certificate_required",
     "a CA-only manual enrollment needs ca_certificate_pem, the CA certificate"),
    ("manual", {"ca_certificate_pem": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"},
     "invalid_certificate", "expected PEM or DER X.509 data"),
    ("self_signed", {"ocsp_url": "ldap://ocsp.example.com/"}, "invalid_url", "ocsp_url 'ldap://"),
    ("est", {"crl_urls": ["http://crl.example.com/a.crl", "crl.example.com/b.crl"]}, "invalid_url",
     "crl_urls 'crl.example.com/b.crl'"),
    ("self_signed", {"name": "vpn id"}, "invalid_name", "is not a valid trustpoint name"),
    ("est", {"key_type": "rsa", "key_size": 256}, "invalid_key_size", "choose one of 1024, 2048, 3072, 4096"),
    ("scep", {"country": "us"}, "invalid_country", "two-letter ISO 3166 code"),
    ("manual", {"validity_days": 3651}, "invalid_validity", "1 to 3650 days"),
])
def test_refusals_carry_a_stable_code_and_say_what_to_change(kind, fields, code, says):
    error = refusal(create(kind, **fields))
    assert error.code == code
    assert says in error.message
