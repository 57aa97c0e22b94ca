"""The device's rule for a certificate it will use for IPsec: a threat-defense device refuses a
certificate whose only IPsec extended key usage is 'IP security IKE intermediate', which is what
the Microsoft 2012 CA's IPsec (Offline request) template issues, unless the enrollment object
says to ignore the IPsec key usage (``ignore_ipsec_key_usage``). Pure."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

#: "IP security IKE intermediate": refused on its own.
IPSEC_IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")
#: "IP security end system": what the device expects for IPsec.
IPSEC_END_SYSTEM = ObjectIdentifier("1.3.6.1.5.5.7.3.5")

#: What the operator does on the Microsoft CA so that it issues certificates the device accepts.
IPSEC_REMEDY = (
    "To fix it on the Microsoft CA: 1. Duplicate the IPsec (Offline Request) template. 2. In Extensions > "
    "Application policies, select 'IP security end system' instead of 'IP security IKE intermediate'. "
    "3. Set the permissions and the template name. 4. Add the new template and change the registry "
    "settings to reflect the new template name. Then re-enroll the device. Or, to accept such certificates "
    "as they are, set the enrollment object's 'Ignore IPsec Key Usage' (ignore_ipsec_key_usage) and re-enroll."
)


def check_ipsec_eku(cert: x509.Certificate) -> str | None:
    """None when the device accepts ``cert`` for IPsec, else the problem and how to fix the CA.
    Only 'IP security IKE intermediate' without 'IP security end system' is refused: a
    certificate without the extension, or with other usages only (TLS, say), is accepted."""
    try:
        ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None
    if IPSEC_IKE_INTERMEDIATE in ekus and IPSEC_END_SYSTEM not in ekus:
        return (
            f"certificate {cert.subject.rfc4514_string()} has the extended key usage 'IP security IKE "
            f"intermediate' ({IPSEC_IKE_INTERMEDIATE.dotted_string}) instead of 'IP security end system' "
            f"({IPSEC_END_SYSTEM.dotted_string}); the device does not accept it. " + IPSEC_REMEDY
        )
    return None
