"""What a device checks before it installs a certificate its CA issued, and which installed
certificate a renewal may present. Shared by the EST and SCEP clients; pure."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.device_sim.ca_client import trust as ca_trust
from services.device_sim.ca_client.ipsec_eku import check_ipsec_eku
from services.device_sim.ca_client.network import CaFailure
from services.device_sim.tasks import CurrentIdentity, EnrollmentTask
from services.device_sim.validation import settings_of
from shared.pki import PrivateKey, subject_alt_names, subject_name
from shared.weak_crypto import enforce, weak_signature


def renewal_identity(task: EnrollmentTask, issuing: x509.Certificate) -> CurrentIdentity | None:
    """The current certificate a re-enrollment may renew with: one ``issuing`` issued, still
    valid, for the same subject and names; None when the device must enroll anew."""
    current = task.current
    if not task.re_enroll or current is None:
        return None
    cert = current.certificate
    if not ca_trust.issued_by(cert, issuing):
        return None
    if not cert.not_valid_before_utc <= task.now < cert.not_valid_after_utc:
        return None
    if cert.subject != subject_name(task.params, task.device):
        return None
    try:
        present = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        present = set()
    wanted = set(subject_alt_names(task.params, task.device))
    return current if not wanted or wanted == present else None


def accept_issued(certs: Sequence[x509.Certificate], key: PrivateKey, issuing: x509.Certificate, *, url: str,
                  weak_crypto: bool, ignore_ipsec_key_usage: bool = False) -> x509.Certificate:
    """The certificate among ``certs`` for the device's ``key``, checked as the device checks it:
    signed by the issuing CA it served, fit for IPsec (unless the enrollment object ignores the
    IPsec key usage), no weak signature unless weak-crypto is enabled. CaFailure or
    WeakCryptoError otherwise."""
    mine = spki(key.public_key())
    cert = next((c for c in certs if spki(c.public_key()) == mine), None)
    if cert is None:
        raise CaFailure(f"CA at {url} issued a certificate for another public key than the device's; "
                        "the device does not install it", code="ca_wrong_key")
    if not ca_trust.issued_by(cert, issuing):
        raise CaFailure(
            f"CA at {url} issued {cert.subject.rfc4514_string()} signed by {cert.issuer.rfc4514_string()}, "
            f"not by the CA certificate it serves ({issuing.subject.rfc4514_string()})",
            code="ca_chain_mismatch",
        )
    problem = None if ignore_ipsec_key_usage else check_ipsec_eku(cert)
    if problem:
        raise CaFailure(problem, code="ipsec_eku_rejected")
    enforce(weak_signature(cert), weak_crypto_enabled=weak_crypto)
    return cert


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def validation_setting(task: EnrollmentTask, name: str) -> bool:
    """A boolean of the trustpoint's validation settings (skip_ca_flag_check, ignore_ipsec_key_usage)."""
    return bool(settings_of(task.params.options)[name])
