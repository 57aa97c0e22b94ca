"""Enrollment parameters validate on construction with stable codes, and survive the trip
to the device and back."""

from __future__ import annotations

import json

import pytest

from shared.enrollment import EnrollmentParameters, SubjectFields, check_key, check_trustpoint_name
from shared.enums import EnrollmentType, KeyType
from shared.errors import ValidationError


def params(**overrides) -> EnrollmentParameters:
    values = {"name": "est-fleet", "enrollment_type": "est", "key_type": "ecdsa", "key_size": 256}
    return EnrollmentParameters(**(values | overrides))


def code_of(make) -> str:
    with pytest.raises(ValidationError) as info:
        make()
    assert info.value.status == 422
    return info.value.code


@pytest.mark.parametrize("name", ["a", "FTD_trustpoint-1.2", "0day", "x" * 64])
def test_valid_trustpoint_names(name):
    assert check_trustpoint_name(name) == name
    assert params(name=name).name == name


@pytest.mark.parametrize("name", ["", "-leading-dash", ".hidden", "x" * 65, "has space", "tp\n", "tp/../x",
                                  "ünïcode", None, 42])
def test_invalid_trustpoint_names(name):
    with pytest.raises(ValidationError) as info:
        params(name=name)
    assert info.value.code == "invalid_name"
    assert "1-64 letters, digits" in info.value.message


@pytest.mark.parametrize(
    ("key_type", "sizes"),
    [("rsa", (1024, 2048, 3072, 4096)), ("ecdsa", (256, 384, 521)), ("eddsa", (256,))],
)
def test_offered_key_sizes(key_type, sizes):
    for size in sizes:
        assert check_key(key_type, size) == (KeyType(key_type), size)
        assert params(key_type=key_type, key_size=size).key_type is KeyType(key_type)


@pytest.mark.parametrize(
    ("key_type", "key_size", "code", "says"),
    [
        ("dsa", 2048, "invalid_key_type", "not one of rsa, ecdsa, eddsa"),
        ("RSA", 2048, "invalid_key_type", "not one of"),
        ("rsa", 512, "invalid_key_size", "choose one of 1024, 2048, 3072, 4096"),
        ("ecdsa", 2048, "invalid_key_size", "choose one of 256, 384, 521"),
        ("eddsa", 448, "invalid_key_size", "choose one of 256"),
    ],
)
def test_refused_keys(key_type, key_size, code, says):
    with pytest.raises(ValidationError) as info:
        params(key_type=key_type, key_size=key_size)
    assert info.value.code == code
    assert says in info.value.message


def test_unknown_enrollment_type():
    with pytest.raises(ValidationError) as info:
        params(enrollment_type="acme")
    assert info.value.code == "invalid_enrollment_type"
    assert "self_signed, est, scep, manual, pkcs12" in info.value.message


@pytest.mark.parametrize("days", [0, -1, 3651, "365", 1.5])
def test_validity_out_of_range(days):
    assert code_of(lambda: params(validity_days=days)) == "invalid_validity"


@pytest.mark.parametrize("days", [1, 365, 3650])
def test_validity_in_range(days):
    assert params(validity_days=days).validity_days == days


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"country": "USA"}, "invalid_country"),
        ({"country": "us"}, "invalid_country"),
        ({"country": "U"}, "invalid_country"),
        ({"country": "US\n"}, "invalid_country"),
        ({"email": "not-an-email"}, "invalid_email"),
        ({"email": "a b@example.com"}, "invalid_email"),
        ({"email": "pki@example.com\n"}, "invalid_email"),
        ({"common_name": "c" * 65}, "invalid_subject"),
    ],
)
def test_subject_field_errors(fields, code):
    assert code_of(lambda: SubjectFields(**fields)) == code


def test_valid_subject():
    subject = SubjectFields(common_name="fw1.example.net", organization="Example",
                            organizational_unit="NetOps", locality="Paris", state="IDF", country="FR",
                            email="pki@example.net")
    assert subject.country == "FR"
    with pytest.raises(AttributeError):  # frozen: nothing changes after validation
        subject.country = "not valid"  # type: ignore[misc]


def test_wire_round_trip_through_json():
    original = params(
        enrollment_type=EnrollmentType.SCEP, key_type="rsa", key_size=3072,
        subject=SubjectFields(common_name="fw1", organization="Example", country="DE",
                              email="pki@example.net"),
        include_fqdn=True, include_device_ip=True, include_serial_number=True, validity_days=730,
        options={"url": "http://[2001:db8::5]/cgi-bin/pkiclient.exe", "retry_count": 10,
                 "fingerprint": "ab:cd"},
    )
    wire = original.to_wire()
    # What travels is plain JSON: strings for enums, a mapping for the subject.
    assert wire["enrollment_type"] == "scep" and wire["key_type"] == "rsa"
    assert wire["subject"]["country"] == "DE"
    again = EnrollmentParameters.from_wire(json.loads(json.dumps(wire)))
    assert again == original
    assert again.enrollment_type is EnrollmentType.SCEP and again.key_type is KeyType.RSA


def test_wire_round_trip_with_defaults():
    original = EnrollmentParameters(name="self", enrollment_type="self_signed")
    assert EnrollmentParameters.from_wire(original.to_wire()) == original
    assert original.key_type is KeyType.RSA and original.key_size == 2048


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        ({"name": "tp", "enrollment_type": "est", "colour": "blue"}, "validation_error"),
        ({"enrollment_type": "est"}, "validation_error"),
        ({"name": "tp", "enrollment_type": "est", "subject": {"nickname": "x"}}, "validation_error"),
        ({"name": "tp", "enrollment_type": "est", "subject": "CN=fw1"}, "validation_error"),
        ({"name": "tp", "enrollment_type": "est", "subject": {"country": "France"}}, "invalid_country"),
        ({"name": "tp", "enrollment_type": "carrier-pigeon"}, "invalid_enrollment_type"),
        ({"name": "tp", "enrollment_type": "est", "key_type": "ecdsa", "key_size": 1024}, "invalid_key_size"),
    ],
)
def test_malformed_wire_data_is_a_validation_error(wire, code):
    assert code_of(lambda: EnrollmentParameters.from_wire(wire)) == code


def test_malformed_wire_message_says_what_is_wrong():
    with pytest.raises(ValidationError) as info:
        EnrollmentParameters.from_wire({"name": "tp", "enrollment_type": "est", "colour": "blue"})
    assert "trustpoint configuration is malformed" in info.value.message
    assert "colour" in info.value.message


def test_the_repr_of_parameters_never_shows_their_secrets():
    params = EnrollmentParameters(name="vpn", enrollment_type="est", key_type="ecdsa", key_size=256,
                                  options={"password": "s3cret-enroll", "challenge": "otp-42"})
    assert "s3cret-enroll" not in repr(params) and "otp-42" not in repr(params)
