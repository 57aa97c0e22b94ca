"""The certificate request a device makes: the trustpoint's subject and names, signed by the
device's key, with SCEP's challenge password only when one is given."""

from __future__ import annotations

from ipaddress import ip_address

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID, NameOID

from shared.enrollment import EnrollmentParameters, SubjectFields
from shared.enums import EnrollmentType, KeyType
from shared.pki import DeviceIdentity
from shared.protocols.csr import build_csr

DEVICE = DeviceIdentity(serial="FTD-000042", fqdn="fw42.example.net", ip_address="2001:db8::42")
KEY = ec.generate_private_key(ec.SECP256R1())


def params(**fields) -> EnrollmentParameters:
    return EnrollmentParameters(name="vpn", enrollment_type=EnrollmentType.EST, key_type=KeyType.ECDSA,
                                key_size=256, **fields)


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_request_carries_the_subject_names_and_key_of_the_trustpoint():
    csr = build_csr(KEY, params(subject=SubjectFields(organization="Example", country="US"), include_fqdn=True,
                                include_device_ip=True, include_serial_number=True), DEVICE)
    assert csr.is_signature_valid
    assert spki(csr.public_key()) == spki(KEY.public_key())
    assert [(a.oid, a.value) for a in csr.subject] == [
        (NameOID.COUNTRY_NAME, "US"), (NameOID.ORGANIZATION_NAME, "Example"),
        (NameOID.COMMON_NAME, "fw42.example.net"), (NameOID.SERIAL_NUMBER, "FTD-000042"),
    ]
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["fw42.example.net"]
    assert sans.get_values_for_type(x509.IPAddress) == [ip_address("2001:db8::42")]


def test_no_names_asked_for_means_no_subject_alt_name_extension_and_no_challenge():
    csr = build_csr(KEY, params(), DEVICE)
    assert len(csr.extensions) == 0
    assert not any(a.oid == AttributeOID.CHALLENGE_PASSWORD for a in csr.attributes)


def test_a_challenge_password_is_an_attribute_of_the_request():
    csr = build_csr(KEY, params(), DEVICE, challenge_password="one-time-Ch4llenge")
    assert csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value == b"one-time-Ch4llenge"
