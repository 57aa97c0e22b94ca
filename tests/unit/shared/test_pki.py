"""Self-signed certificates a device makes, and the parsed view the operator is shown."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from shared.enrollment import EnrollmentParameters, SubjectFields
from shared.errors import ValidationError
from shared.pki import (
    DeviceIdentity,
    describe,
    generate_private_key,
    load_certificates,
    self_signed_certificate,
    to_pem,
)

NOW = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
DEVICE = DeviceIdentity(serial="9A1B2C3D4E5", fqdn="fw1.example.net", ip_address="2001:db8::17")


def params(key_type="ecdsa", key_size=256, **overrides) -> EnrollmentParameters:
    return EnrollmentParameters(name="self", enrollment_type="self_signed", key_type=key_type,
                                key_size=key_size, **overrides)


def make(key_type="ecdsa", key_size=256, device=DEVICE, **overrides):
    key = generate_private_key(key_type, key_size)
    parameters = params(key_type, key_size, **overrides)
    cert = self_signed_certificate(key, parameters, device, now=NOW, serial=0x1F2E)
    return key, cert


KEYS = [
    ("rsa", 2048, rsa.RSAPublicKey, "RSA", 2048, "sha256WithRSAEncryption"),
    ("ecdsa", 256, ec.EllipticCurvePublicKey, "ECDSA", 256, "ecdsa-with-SHA256"),
    ("ecdsa", 384, ec.EllipticCurvePublicKey, "ECDSA", 384, "ecdsa-with-SHA384"),
    ("eddsa", 256, ed25519.Ed25519PublicKey, "EdDSA", 256, "ed25519"),
]


@pytest.mark.parametrize(("key_type", "key_size", "public_type", "algorithm", "bits", "signature"), KEYS,
                         ids=["rsa2048", "p256", "p384", "ed25519"])
def test_self_signed_certificate_for_each_key_type(key_type, key_size, public_type, algorithm, bits,
                                                   signature):
    key, cert = make(key_type, key_size)
    assert isinstance(cert.public_key(), public_type)
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(cert)  # its own signature checks out
    assert cert.subject == cert.issuer
    info = describe(cert)
    assert (info.key_algorithm, info.key_size, info.signature_algorithm) == (algorithm, bits, signature)
    # RSA keys also encipher (TLS key transport); the others only sign.
    expected_usage = ["digital_signature"] + (["key_encipherment"] if key_type == "rsa" else [])
    assert info.key_usage == expected_usage


def test_validity_window_and_serial():
    _, cert = make(validity_days=30)
    info = describe(cert)
    assert info.not_before == NOW - timedelta(minutes=5)
    assert info.not_after == NOW + timedelta(days=30)
    assert info.not_before.tzinfo is not None
    assert info.serial_number == "1f2e"


def test_subject_from_the_enrollment_object():
    subject = SubjectFields(common_name="vpn.example.net", organization="Example Corp",
                            organizational_unit="NetOps", locality="Lyon", state="ARA", country="FR",
                            email="pki@example.net")
    _, cert = make(subject=subject, include_serial_number=True)
    get = cert.subject.get_attributes_for_oid
    assert get(NameOID.COMMON_NAME)[0].value == "vpn.example.net"
    assert get(NameOID.ORGANIZATION_NAME)[0].value == "Example Corp"
    assert get(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "NetOps"
    assert get(NameOID.LOCALITY_NAME)[0].value == "Lyon"
    assert get(NameOID.STATE_OR_PROVINCE_NAME)[0].value == "ARA"
    assert get(NameOID.COUNTRY_NAME)[0].value == "FR"
    assert get(NameOID.EMAIL_ADDRESS)[0].value == "pki@example.net"
    assert get(NameOID.SERIAL_NUMBER)[0].value == DEVICE.serial
    assert describe(cert).subject == (
        "serialNumber=9A1B2C3D4E5,emailAddress=pki@example.net,CN=vpn.example.net,OU=NetOps,"
        "O=Example Corp,L=Lyon,ST=ARA,C=FR"
    )


@pytest.mark.parametrize(
    ("device", "expected_cn"),
    [(DEVICE, "fw1.example.net"), (DeviceIdentity(serial="JMX1234"), "JMX1234")],
)
def test_common_name_defaults_to_fqdn_then_serial(device, expected_cn):
    _, cert = make(device=device)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == expected_cn
    assert not cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)


def test_subject_alternative_names_for_fqdn_ip_and_email():
    _, cert = make(include_fqdn=True, include_device_ip=True, subject=SubjectFields(email="noc@example.net"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fw1.example.net"]
    assert san.get_values_for_type(x509.IPAddress) == [ip_address("2001:db8::17")]
    assert san.get_values_for_type(x509.RFC822Name) == ["noc@example.net"]
    expected = ["DNS:fw1.example.net", "IP:2001:db8::17", "email:noc@example.net"]
    assert describe(cert).subject_alt_names == expected


def test_ipv4_address_san():
    device = DeviceIdentity(serial="S1", ip_address="192.0.2.10")
    _, cert = make(device=device, include_device_ip=True)
    assert describe(cert).subject_alt_names == ["IP:192.0.2.10"]


def test_no_san_extension_unless_asked():
    _, cert = make()
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert describe(cert).subject_alt_names == []


def test_describe_fields_of_a_self_signed_certificate():
    _, cert = make()
    info = describe(cert)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert info.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert info.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert info.fingerprint_sha1 == cert.fingerprint(hashes.SHA1()).hex()
    assert info.extended_key_usage == ["serverAuth", "clientAuth"]
    assert info.subject == info.issuer == "CN=fw1.example.net"
    assert info.is_ca is False
    assert (info.crl_urls, info.ocsp_urls) == ([], [])


def test_describe_a_ca_certificate_with_revocation_pointers():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Issuing CA")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(7).not_valid_before(NOW).not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     key_cert_sign=True, crl_sign=True, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier("http://[2001:db8::5]/ca.crl")], None, None, None)]),
            critical=False)
        .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier("http://ocsp.example.net/"))]),
            critical=False)
        .sign(key, hashes.SHA256())
    )
    info = describe(cert)
    assert info.is_ca is True
    assert info.key_usage == ["key_cert_sign", "crl_sign"]
    assert info.extended_key_usage == ["OCSPSigning"]
    assert info.crl_urls == ["http://[2001:db8::5]/ca.crl"]
    assert info.ocsp_urls == ["http://ocsp.example.net/"]
    assert info.serial_number == "7"


def test_load_certificates_pem_bundle_der_and_text():
    _, first = make()
    _, second = make("eddsa", 256)
    bundle = (to_pem(first) + to_pem(second)).encode()
    assert load_certificates(bundle) == [first, second]
    assert load_certificates(to_pem(first)) == [first]  # PEM text as stored in the database
    assert load_certificates(first.public_bytes(serialization.Encoding.DER)) == [first]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage that is not a certificate",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        b"\x30\x82\x01\x00" + b"\x00" * 16,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
    ],
    ids=["empty", "text", "bad-pem", "truncated-der", "private-key"],
)
def test_load_certificates_refuses_what_is_not_a_certificate(data):
    with pytest.raises(ValidationError) as info:
        load_certificates(data)
    assert info.value.code == "invalid_certificate"
    assert info.value.status == 422
    assert "expected PEM or DER X.509" in info.value.message


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_reads_the_certificate(tmp_path):
    _, cert = make("rsa", 2048, include_fqdn=True, include_device_ip=True)
    path = tmp_path / "cert.pem"
    path.write_text(to_pem(cert))
    out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-text"],
                         capture_output=True, text=True, check=True).stdout
    assert "Subject: CN = fw1.example.net" in out
    assert "DNS:fw1.example.net, IP Address:2001:DB8:0:0:0:0:0:17" in out
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in out
