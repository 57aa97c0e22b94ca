"""How a device obtains a trustpoint's certificates, one enroller per enrollment type.

An enroller is a plain function from an :class:`EnrollmentTask` to an outcome: the key
pair and certificates to install, a request the CA holds, or a refusal with a stable code
(:mod:`.tasks`). It touches no device state (the caller installs the outcome), so it may run
in a worker thread. EST (:mod:`.ca_client.est_client`) is a coroutine instead: it runs on the
event loop (:func:`enroll_on_loop`). Self-signed, EST, SCEP (:mod:`.ca_client.scep_client`),
manual (:mod:`.manual`) and PKCS12 (:mod:`.pkcs12_install`) enrollment are implemented; another
type plugs in by adding its function to :data:`ENROLLERS` (and to :data:`NETWORK_TYPES` when it
talks to a CA), or its coroutine to :data:`LOOP_ENROLLERS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cryptography import x509

from services.device_sim.ca_client.est_client import enroll_est
from services.device_sim.ca_client.scep_client import enroll_scep
from services.device_sim.keypairs import MIN_RSA_BITS, generate_device_key
from services.device_sim.manual import enroll_manual
from services.device_sim.pkcs12_install import enroll_pkcs12
from services.device_sim.tasks import (
    CaClientSettings,
    CurrentIdentity,
    Enrolled,
    Enroller,
    EnrollmentTask,
    HeldByCa,
    HeldRequest,
    Outcome,
    Refused,
)
from shared.enrollment import EnrollmentParameters
from shared.enums import CertificateRole, EnrollmentType, KeyType
from shared.errors import WeakCryptoError
from shared.pki import self_signed_certificate

__all__ = [
    "CaClientSettings", "CurrentIdentity", "ENROLLERS", "Enrolled", "Enroller", "EnrollmentTask", "HeldByCa",
    "HeldRequest", "LOOP_ENROLLERS", "MIN_RSA_BITS", "NETWORK_TYPES", "Outcome", "Refused", "enroll",
    "enroll_on_loop", "enroll_self_signed", "generate_device_key", "runs_off_loop", "runs_on_loop",
]


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
    EnrollmentType.MANUAL: enroll_manual,
    EnrollmentType.PKCS12: enroll_pkcs12,
    EnrollmentType.SCEP: enroll_scep,
}
#: Enrollers that run on the event loop: they wait on the network without a thread, and move
#: their own slow work (an RSA key) off the loop.
LOOP_ENROLLERS: dict[EnrollmentType, Callable[[EnrollmentTask], Awaitable[Outcome]]] = {
    EnrollmentType.EST: enroll_est,
}
#: Types whose (blocking) enroller waits on the network (a CA); they always run off the event loop.
NETWORK_TYPES: frozenset[EnrollmentType] = frozenset({EnrollmentType.SCEP})


def runs_on_loop(params: EnrollmentParameters) -> bool:
    """Whether the trustpoint enrolls by a coroutine of :data:`LOOP_ENROLLERS`."""
    return params.enrollment_type in LOOP_ENROLLERS


async def enroll_on_loop(task: EnrollmentTask) -> Outcome:
    try:
        return await LOOP_ENROLLERS[task.params.enrollment_type](task)
    except WeakCryptoError as exc:
        return Refused(code=exc.code, message=exc.message)


def runs_off_loop(params: EnrollmentParameters) -> bool:
    """Whether enrolling is slow enough to need a worker thread: RSA key generation
    (20-100 ms) or a CA exchange. P-256 and Ed25519 cost well under a millisecond."""
    return params.key_type is KeyType.RSA or params.enrollment_type in NETWORK_TYPES


def enroll(task: EnrollmentTask) -> Outcome:
    enroller = ENROLLERS.get(task.params.enrollment_type)
    if enroller is None:
        supported = ", ".join(sorted(t.value for t in (*ENROLLERS, *LOOP_ENROLLERS)))
        return Refused(
            code="unsupported_enrollment_type",
            message=f"device {task.device.serial} cannot enroll {task.params.enrollment_type.value} "
            f"trustpoints yet (the simulator supports: {supported}); use an enrollment object of one of "
            "those types",
        )
    try:
        return enroller(task)
    except WeakCryptoError as exc:
        return Refused(code=exc.code, message=exc.message)
