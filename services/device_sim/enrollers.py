"""How a device obtains a trustpoint's certificates, one enroller per enrollment type.

An enroller is a plain function from an :class:`EnrollmentTask` to an outcome: the key
pair and certificates to install, or a refusal with a stable code. It touches no device
state (the caller installs the outcome), so it may run in a worker thread. Self-signed
enrollment is implemented; an EST or SCEP client plugs in by adding its function to
:data:`ENROLLERS` (and its type to :data:`NETWORK_TYPES`, as it talks to a CA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from shared.enrollment import EnrollmentParameters
from shared.enums import CertificateRole, EnrollmentType, KeyType
from shared.errors import WeakCryptoError
from shared.pki import DeviceIdentity, PrivateKey, generate_private_key, self_signed_certificate
from shared.states import Status

#: RSA keys shorter than this need weak-crypto enabled on the device.
MIN_RSA_BITS = 2048


@dataclass(frozen=True, kw_only=True)
class EnrollmentTask:
    params: EnrollmentParameters
    device: DeviceIdentity
    weak_crypto: bool
    #: True to renew (an EST simplereenroll, for instance); every enrollment makes a new key pair.
    re_enroll: bool
    now: datetime


@dataclass(frozen=True, kw_only=True)
class Enrolled:
    private_key: PrivateKey
    #: (role, chain position, certificate), identity first.
    certificates: tuple[tuple[CertificateRole, int, x509.Certificate], ...]
    ca_status: Status = Status.AVAILABLE
    identity_status: Status = Status.AVAILABLE


@dataclass(frozen=True, kw_only=True)
class Refused:
    code: str
    message: str
    #: Whether the same request may succeed later without anyone changing anything.
    retryable: bool = False


Outcome = Enrolled | Refused
Enroller = Callable[[EnrollmentTask], Outcome]


def generate_device_key(params: EnrollmentParameters, *, weak_crypto: bool) -> PrivateKey:
    """The device's new key pair, refusing a weak one unless weak-crypto is enabled."""
    if params.key_type is KeyType.RSA and params.key_size < MIN_RSA_BITS and not weak_crypto:
        raise WeakCryptoError(f"RSA-{params.key_size}")
    return generate_private_key(params.key_type, params.key_size)


def enroll_self_signed(task: EnrollmentTask) -> Outcome:
    """The device acts as its own CA: its one certificate is both identity and CA."""
    key = generate_device_key(task.params, weak_crypto=task.weak_crypto)
    cert = self_signed_certificate(
        key, task.params, task.device, now=task.now, serial=x509.random_serial_number()
    )
    return Enrolled(
        private_key=key,
        certificates=((CertificateRole.IDENTITY, 0, cert), (CertificateRole.CA, 0, cert)),
    )


ENROLLERS: dict[EnrollmentType, Enroller] = {
    EnrollmentType.SELF_SIGNED: enroll_self_signed,
}
#: Types whose enroller waits on the network (a CA); they always run off the event loop.
NETWORK_TYPES: frozenset[EnrollmentType] = frozenset()


def runs_off_loop(params: EnrollmentParameters) -> bool:
    """Whether enrolling is slow enough to need a worker thread: RSA key generation
    (20-100 ms) or a CA exchange. P-256 and Ed25519 cost well under a millisecond."""
    return params.key_type is KeyType.RSA or params.enrollment_type in NETWORK_TYPES


def enroll(task: EnrollmentTask) -> Outcome:
    enroller = ENROLLERS.get(task.params.enrollment_type)
    if enroller is None:
        supported = ", ".join(sorted(t.value for t in ENROLLERS))
        return Refused(
            code="unsupported_enrollment_type",
            message=f"device {task.device.serial} cannot enroll {task.params.enrollment_type.value} "
            f"trustpoints yet (the simulator supports: {supported}); use a {supported} enrollment object",
        )
    try:
        return enroller(task)
    except WeakCryptoError as exc:
        return Refused(code=exc.code, message=exc.message)
