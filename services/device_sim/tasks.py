"""What an enroller gets and what it gives back. Plain records, no behaviour.

An :class:`EnrollmentTask` is a snapshot of one trustpoint's enrollment taken on the event
loop's thread, so an enroller may run in a worker thread without touching device state. The
outcome is one of :class:`Enrolled`, :class:`HeldByCa` (the CA holds the request for an
operator) or :class:`Refused`; :func:`services.device_sim.trustpoints.finish` installs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from shared.enrollment import EnrollmentParameters
from shared.enums import CertificateRole
from shared.pki import DeviceIdentity, PrivateKey
from shared.states import Status

#: (role, chain position, certificate) as the trustpoint installs it.
Slot = tuple[CertificateRole, int, x509.Certificate]


@dataclass(frozen=True, kw_only=True)
class CaClientSettings:
    """How the device talks to CA servers: the same for every device holding the same CA bundle."""

    #: PEM certificates the device trusts for HTTPS servers ("" for none): the fleet's trust
    #: anchors, then the certificates of the device's CA bundle.
    trust_anchors_pem: str = ""
    #: The device's CA bundle among them: its version ("" for none) and how many certificates.
    bundle_version: str = ""
    bundle_certificates: int = 0
    #: How long one enrollment keeps polling a CA that holds its request before it reports
    #: the identity certificate pending (the device then keeps polling in the background).
    wait_seconds: float = 4.0
    #: Connect and read timeout of one request to a CA.
    timeout_seconds: float = 5.0
    #: Seconds in one minute of a SCEP enrollment object's retry period (60; less in tests).
    scep_minute_seconds: float = 60.0


@dataclass(frozen=True, kw_only=True)
class CurrentIdentity:
    """The identity certificate a trustpoint holds now, and its key: what a renewal presents."""

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class HeldRequest:
    """A certificate request a CA holds until an operator approves it. The device keeps the key
    and asks again with the very same request, so the CA sees one request, not many."""

    params: EnrollmentParameters = field(repr=False)  # the configuration it was made for
    private_key: PrivateKey = field(repr=False)
    csr: x509.CertificateSigningRequest
    #: Whether it renews the installed certificate (EST simplereenroll), authenticated by it.
    renewal: bool
    #: Seconds the CA asked the device to wait before asking again.
    retry_after: float
    first_asked_at: datetime
    #: When the device stops asking on its own; None: the enrollment object's retry count
    #: times its retry period after the first ask (see trustpoints.held_until).
    poll_until: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class EnrollmentTask:
    params: EnrollmentParameters
    device: DeviceIdentity
    weak_crypto: bool
    #: True to renew (an EST simplereenroll, for instance); every enrollment makes a new key pair.
    re_enroll: bool
    now: datetime
    ca: CaClientSettings = field(default_factory=CaClientSettings)
    #: The installed identity certificate, for a renewal that authenticates with it.
    current: CurrentIdentity | None = None
    #: A request the CA already holds for this trustpoint, to ask about again.
    held: HeldRequest | None = None


@dataclass(frozen=True, kw_only=True)
class Enrolled:
    #: None for a CA-only trustpoint: it has no key pair of its own.
    private_key: PrivateKey | None = field(repr=False)
    #: (role, chain position, certificate), identity first.
    certificates: tuple[Slot, ...]
    ca_status: Status = Status.AVAILABLE
    identity_status: Status = Status.AVAILABLE


@dataclass(frozen=True, kw_only=True)
class HeldByCa:
    """The CA certificates are installed; the identity certificate waits for the CA."""

    request: HeldRequest
    #: The CA chain as the CA served it: issuing CA at position 0, then towards the root.
    ca_certificates: tuple[Slot, ...]


@dataclass(frozen=True, kw_only=True)
class CsrPending:
    """Manual enrollment: the device made a key pair and a CSR and waits for the operator to
    import the identity certificate; the CA certificate is installed if the object gave one."""

    request: HeldRequest
    ca_certificates: tuple[Slot, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Refused:
    code: str
    message: str
    #: Whether the same request may succeed later without anyone changing anything.
    retryable: bool = False
    #: Seconds the CA asked to wait before trying again, if it said (passed on to the controller).
    retry_after: float | None = None
    #: CA certificates obtained before the failure (EST cacerts worked, enrollment did not).
    ca_certificates: tuple[Slot, ...] = ()


Outcome = Enrolled | HeldByCa | CsrPending | Refused
Enroller = Callable[[EnrollmentTask], Outcome]
