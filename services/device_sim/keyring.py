"""The device's default keyring: a self-signed certificate the device makes for itself.

Made on first access (50,000 devices start in well under a second that way), with a
P-256 key because a health check may touch every device. A device picked for an expired
keyring gets one whose validity ended a month ago, which is what raises the "default
Keyring's certificate is invalid, reason: expired" health alert; regenerating (the
device's ``system support regenerate-security-keyring default``) makes a valid one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509

from services.device_sim.fleet import Device, Keyring
from shared.enrollment import EnrollmentParameters, SubjectFields
from shared.enums import EnrollmentType, KeyType
from shared.pki import generate_private_key, self_signed_certificate, to_pem

NAME = "default"
VALIDITY_DAYS = 365
#: An expired keyring's certificate ended this long before the device made it.
EXPIRED_AGO = timedelta(days=30)


def default_keyring(device: Device, *, now: datetime) -> Keyring:
    """The device's keyring, made now if it has none yet."""
    if device.keyring is None:
        device.keyring = make_keyring(device, now=now, expired=device.keyring_expired)
    return device.keyring


def regenerate(device: Device, *, now: datetime) -> Keyring:
    """A new key pair and a valid certificate, replacing whatever the keyring held."""
    device.keyring_expired = False
    device.keyring = make_keyring(device, now=now, expired=False)
    return device.keyring


def make_keyring(device: Device, *, now: datetime, expired: bool) -> Keyring:
    params = EnrollmentParameters(
        name=NAME, enrollment_type=EnrollmentType.SELF_SIGNED, key_type=KeyType.ECDSA, key_size=256,
        subject=SubjectFields(common_name=device.fqdn, organizational_unit=device.model),
        include_fqdn=True, include_device_ip=True, include_serial_number=True, validity_days=VALIDITY_DAYS,
    )
    # Backdate the issue so that the validity ended EXPIRED_AGO before now.
    issued = now - timedelta(days=VALIDITY_DAYS) - EXPIRED_AGO if expired else now
    key = generate_private_key(KeyType.ECDSA, 256)
    serial = x509.random_serial_number()
    certificate = self_signed_certificate(key, params, device.identity, now=issued, serial=serial)
    return Keyring(
        pem=to_pem(certificate), not_valid_before=certificate.not_valid_before_utc,
        not_valid_after=certificate.not_valid_after_utc, private_key=key,
    )


def validity(keyring: Keyring, *, now: datetime) -> tuple[bool, str | None]:
    """(valid, reason) as the device reports it; the reason words follow the health alert."""
    if now >= keyring.not_valid_after:
        return False, "expired"
    if now < keyring.not_valid_before:
        return False, "not yet valid"
    return True, None
