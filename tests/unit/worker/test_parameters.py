"""What a device is told to configure, built from the enrollment object and the device."""

from __future__ import annotations

import uuid

import pytest

from services.worker.parameters import trustpoint_configuration
from shared.enums import EnrollmentType, KeyType
from shared.errors import ConfigurationError, ValidationError
from shared.models import GLOBAL_DOMAIN_ID, Device, EnrollmentObject
from shared.secrets import SecretBox

BOX = SecretBox("worker-parameters-test-key")


def device(**fields) -> Device:
    return Device(domain_id=GLOBAL_DOMAIN_ID, name="ftd-1", serial="FTD-000001", management_url="http://x",
                  **fields)


def obj(**fields) -> EnrollmentObject:
    defaults = dict(id=uuid.uuid4(), domain_id=GLOBAL_DOMAIN_ID, name="vpn", enrollment_type="self_signed")
    return EnrollmentObject(**{**defaults, **fields})


def test_self_signed_object_becomes_its_configuration_with_the_devices_weak_crypto():
    params = trustpoint_configuration(
        obj(key_type="ecdsa", key_size=384, common_name="vpn.example.com", organization="Example",
            country="DE", include_fqdn=True, validity_days=90),
        device(weak_crypto=True), name="vpn",
    )
    assert (params.name, params.enrollment_type, params.key_type, params.key_size) == (
        "vpn", EnrollmentType.SELF_SIGNED, KeyType.ECDSA, 384)
    assert (params.subject.common_name, params.subject.organization, params.subject.country) == (
        "vpn.example.com", "Example", "DE")
    assert params.include_fqdn and params.validity_days == 90
    assert params.options == {"weak_crypto": True}


def test_est_configuration_carries_the_ca_settings_and_its_password():
    est = obj(enrollment_type="est", enrollment_url="https://[2001:db8::5]/.well-known/est", username="ftd",
              fingerprint="ab:cd", secret_blob=BOX.seal(b"s3cret"), crl_urls=["http://crl.example/ca.crl"])
    params = trustpoint_configuration(est, device(), name="vpn", secrets=BOX)
    assert params.options["enrollment_url"] == "https://[2001:db8::5]/.well-known/est"
    assert params.options["username"] == "ftd" and params.options["password"] == "s3cret"
    assert params.options["crl_urls"] == ["http://crl.example/ca.crl"]
    assert params.options["weak_crypto"] is False
    # Without the key, no secret: nothing half-decrypted travels.
    assert "password" not in trustpoint_configuration(est, device(), name="vpn").options


def test_secret_sealed_under_another_key_is_a_clear_configuration_error():
    scep = obj(enrollment_type="scep", secret_blob=SecretBox("another-key").seal(b"challenge"))
    with pytest.raises(ConfigurationError, match="CERTFLEET_SECRET_KEY differs"):
        trustpoint_configuration(scep, device(), name="vpn", secrets=BOX)


def test_stored_value_the_device_cannot_take_is_refused_with_its_code():
    with pytest.raises(ValidationError) as caught:
        trustpoint_configuration(obj(country="Germany"), device(), name="vpn")
    assert caught.value.code == "invalid_country"


def test_pkcs12_configuration_carries_the_file_and_passphrase_decrypted_and_manual_its_ca():
    p12 = obj(name="gw", enrollment_type="pkcs12", pkcs12_blob=BOX.seal(b"\x30\x82 p12 bytes"),
              secret_blob=BOX.seal(b"p12-pass"), pkcs12_filename="gw.p12")
    params = trustpoint_configuration(p12, device(), name="gw", secrets=BOX)
    assert params.options["pkcs12_base64"] == "MIIgcDEyIGJ5dGVz"
    assert params.options["passphrase"] == "p12-pass"
    assert "p12-pass" not in repr(params)
    manual = obj(enrollment_type="manual", ca_certificate_pem="-----BEGIN CERTIFICATE-----…", ca_only=True)
    options = trustpoint_configuration(manual, device(), name="vpn").options
    assert options["ca_only"] is True and options["ca_certificate_pem"].startswith("-----BEGIN")
