"""The certificate request (PKCS#10) a device makes for a trustpoint, whatever carries it to
the CA: EST's simpleenroll, SCEP's PKCSReq, or an operator for manual enrollment. Pure."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import AttributeOID

from shared.enrollment import EnrollmentParameters
from shared.pki import DeviceIdentity, PrivateKey, signing_hash, subject_alt_names, subject_name


def build_csr(key: PrivateKey, params: EnrollmentParameters, device: DeviceIdentity, *,
              challenge_password: str = "") -> x509.CertificateSigningRequest:
    """The request for the trustpoint's subject and names, as the self-signed certificate has them,
    signed with ``key``; with a ``challenge_password`` attribute when given (SCEP's PKCSReq carries it)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject_name(params, device))
    sans = subject_alt_names(params, device)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if challenge_password:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge_password.encode())
    return builder.sign(key, signing_hash(key))
