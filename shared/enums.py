"""Closed value sets of the domain. StrEnum refuses unknown values on construction."""

from __future__ import annotations

from enum import StrEnum


class EnrollmentType(StrEnum):
    SELF_SIGNED = "self_signed"
    EST = "est"
    SCEP = "scep"
    MANUAL = "manual"
    PKCS12 = "pkcs12"


class KeyType(StrEnum):
    RSA = "rsa"
    ECDSA = "ecdsa"
    EDDSA = "eddsa"


#: Key sizes the management center offers per key type (bits; EdDSA is Ed25519).
KEY_SIZES: dict[KeyType, tuple[int, ...]] = {
    KeyType.RSA: (1024, 2048, 3072, 4096),
    KeyType.ECDSA: (256, 384, 521),
    KeyType.EDDSA: (256,),
}


class JobKind(StrEnum):
    ENROLL = "enroll"
    RE_ENROLL = "re_enroll"
    REFRESH = "refresh"
    DELETE = "delete"
    #: Install the identity certificate an operator imported into a manual trustpoint.
    INSTALL_IDENTITY = "install_identity"
    #: Push certfleet's current CA bundle to a device (no trustpoint).
    BUNDLE_UPDATE = "bundle_update"
    #: Make the device a new default keyring (``system support regenerate-security-keyring default``).
    REGENERATE_KEYRING = "regenerate_keyring"


class JobReason(StrEnum):
    """Why a job was created."""

    OPERATOR = "operator"
    BULK = "bulk"
    RENEWAL = "renewal"
    #: A domain's policy (e.g. regenerating expired default keyrings on its own).
    POLICY = "policy"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)


class CertificateRole(StrEnum):
    IDENTITY = "identity"
    CA = "ca"


class Role(StrEnum):
    """API roles, each able to do everything the ones below it can. Admin manages domains, tokens,
    webhooks and the installation's settings; Network Admin manages devices, enrollment objects and
    trustpoints; Read Only only reads."""

    ADMIN = "admin"
    NETWORK_ADMIN = "network_admin"
    READ_ONLY = "read_only"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def includes(self, other: Role) -> bool:
        """Whether this role may do everything ``other`` may."""
        return self.rank >= Role(other).rank

    @property
    def can_write(self) -> bool:
        return self.includes(Role.NETWORK_ADMIN)


_ROLE_RANK = {Role.READ_ONLY: 0, Role.NETWORK_ADMIN: 1, Role.ADMIN: 2}


class AlertCode(StrEnum):
    """What an alert is about. F0853 is the device's own fault code; the others are certfleet's."""

    KEYRING_EXPIRED = "F0853"
    CERTIFICATE_EXPIRING = "CF-CERT-EXPIRING"
    CERTIFICATE_EXPIRED = "CF-CERT-EXPIRED"
    CERTIFICATE_REVOKED = "CF-CERT-REVOKED"
    ENROLLMENT_FAILED = "CF-ENROLL-FAILED"
    RENEWAL_FAILED = "CF-RENEW-FAILED"
    CA_UNREACHABLE = "CF-CA-UNREACHABLE"
    CA_BUNDLE_UPDATE_FAILED = "CF-BUNDLE-FAILED"
    #: A moved device's trustpoint whose enrollment object the device's new domain may not use.
    OBJECT_OUT_OF_DOMAIN = "CF-OBJECT-OUT-OF-DOMAIN"


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"


class AlertState(StrEnum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class DeliveryState(StrEnum):
    """A webhook delivery: waiting for its (next) attempt, delivered, or given up (dead-lettered)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
