"""Which certificates the device accepts for IPsec: only 'IP security IKE intermediate' on its
own is refused, with what to change on the Microsoft CA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.device_sim.ca_client.ipsec_eku import IPSEC_END_SYSTEM, IPSEC_IKE_INTERMEDIATE, check_ipsec_eku
from services.device_sim.ca_client.issued import accept_issued
from services.device_sim.ca_client.network import CaFailure

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def certificate(ekus: list[x509.ObjectIdentifier] | None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fw1.example.net")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(KEY.public_key())
               .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1)))
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    return builder.sign(KEY, hashes.SHA256())


def test_ike_intermediate_alone_is_refused_with_the_fix_on_the_ca():
    problem = check_ipsec_eku(certificate([IPSEC_IKE_INTERMEDIATE]))
    assert problem is not None
    assert problem.startswith("certificate CN=fw1.example.net has the extended key usage 'IP security IKE "
                              "intermediate' (1.3.6.1.5.5.8.2.2) instead of 'IP security end system' "
                              "(1.3.6.1.5.5.7.3.5); the device does not accept it.")
    assert "Duplicate the IPsec (Offline Request) template" in problem
    assert "select 'IP security end system' instead of 'IP security IKE intermediate'" in problem
    assert "Or, to accept such certificates as they are, set the enrollment object's 'Ignore IPsec Key Usage' " \
           "(ignore_ipsec_key_usage) and re-enroll." in problem


def test_the_device_installs_an_ike_intermediate_certificate_when_told_to_ignore_the_ipsec_key_usage():
    cert = certificate([IPSEC_IKE_INTERMEDIATE])  # self-signed: its own issuer here
    with pytest.raises(CaFailure) as refused:
        accept_issued([cert], KEY, cert, url="https://ca.example.com/", weak_crypto=False)
    assert refused.value.code == "ipsec_eku_rejected"
    assert accept_issued([cert], KEY, cert, url="https://ca.example.com/", weak_crypto=False,
                         ignore_ipsec_key_usage=True) == cert


@pytest.mark.parametrize("ekus", [
    None,
    [IPSEC_END_SYSTEM],
    [IPSEC_IKE_INTERMEDIATE, IPSEC_END_SYSTEM],
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
], ids=["no extension", "end system", "both", "TLS"])
def test_other_certificates_are_accepted(ekus):
    assert check_ipsec_eku(certificate(ekus)) is None
