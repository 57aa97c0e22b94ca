"""The conversations with a device, one function per job kind. No database here.

An exchange drives the device through :class:`~shared.device_client.DeviceClient`,
records each step, and returns what the device reports as a checked
:class:`DeviceReport`. It raises :class:`~shared.errors.TransientError` when trying again
later may help and :class:`~shared.errors.PermanentError` when a person must change
something first. Private keys never leave the device: it generates them, and for EST and
SCEP it talks to the CA itself; the worker only pushes configuration and reads results.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from services.worker.steps import StepLog
from shared.device_api import KeyringState, TrustpointState
from shared.device_client import DeviceAddress, DeviceClient
from shared.enrollment import EnrollmentParameters
from shared.enums import CertificateRole, EnrollmentType
from shared.errors import PermanentError, TransientError, ValidationError
from shared.pki import CertificateSummary, load_certificates, summarize
from shared.protocols.ca_bundle import sha256_hex
from shared.states import Status


@dataclass(frozen=True, kw_only=True)
class ReportedCertificate:
    role: CertificateRole
    chain_position: int
    pem: str
    info: CertificateSummary


@dataclass(frozen=True, kw_only=True)
class DeviceReport:
    """A trustpoint as the device reports it, statuses and certificates checked."""

    name: str
    ca: Status
    identity: Status
    certificates: tuple[ReportedCertificate, ...] = ()
    csr_pem: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def failed(self) -> bool:
        return Status.FAILED in (self.ca, self.identity)

    def certificate(self, role: CertificateRole) -> ReportedCertificate | None:
        return next((c for c in self.certificates if c.role is role and c.chain_position == 0), None)

    def summary(self) -> str:
        count = len(self.certificates)
        return (f"CA {self.ca.value}, identity {self.identity.value}, "
                f"{count} certificate{'s' if count != 1 else ''}")


class DeviceReportedFailure(PermanentError):
    """The device answered, and its answer is that the trustpoint failed."""

    def __init__(self, message: str, *, code: str, report: DeviceReport) -> None:
        super().__init__(message, code=code)
        self.report = report


# --- reading a device's answer ----------------------------------------------------------------

def read_report(state: TrustpointState, *, serial: str) -> DeviceReport:
    """Check and parse a device's trustpoint state; a malformed one is a permanent error."""
    try:
        ca, identity = Status(state.ca_status), Status(state.identity_status)
    except ValueError:
        raise PermanentError(
            f"device {serial} reports trustpoint {state.name} with unknown statuses "
            f"{state.ca_status!r}/{state.identity_status!r}",
            code="device_bad_response",
        ) from None
    if state.enrollment_type == EnrollmentType.SELF_SIGNED and identity is Status.AVAILABLE:
        # The device is its own CA: its CA certificate is there as soon as its identity is.
        ca = Status.AVAILABLE
    certificates: list[ReportedCertificate] = []
    slots: set[tuple[str, int]] = set()
    for reported in state.certificates:
        slot = (reported.role, reported.chain_position)
        if slot in slots:
            raise PermanentError(
                f"device {serial} reports two {reported.role} certificates at chain position "
                f"{reported.chain_position} in trustpoint {state.name}",
                code="device_bad_response",
            )
        slots.add(slot)
        try:
            info = _described(reported.pem)
        except (ValidationError, ValueError):
            raise PermanentError(
                f"device {serial} sent a {reported.role} certificate for trustpoint {state.name} that is "
                "not one X.509 certificate in PEM",
                code="invalid_certificate",
            ) from None
        certificates.append(ReportedCertificate(
            role=CertificateRole(reported.role), chain_position=reported.chain_position,
            pem=reported.pem, info=info,
        ))
    return DeviceReport(
        name=state.name, ca=ca, identity=identity, certificates=tuple(certificates),
        csr_pem=state.csr_pem, error_code=state.error_code, error_message=state.error_message,
    )


@lru_cache(maxsize=256)
def _described(pem: str) -> CertificateSummary:
    """One certificate in PEM, summarized for its row; a CA certificate every device of a CA reports is parsed
    once per process (the description is read, never changed). A bad one raises every time."""
    (cert,) = load_certificates(pem.encode())
    return summarize(cert)


def raise_if_failed(state: TrustpointState, report: DeviceReport, *, serial: str) -> None:
    """Mirror a failure the device reports: retryable ones are transient, others permanent."""
    if not report.failed:
        return
    code = state.error_code or "enrollment_failed"
    reason = state.error_message or "the device gave no reason"
    message = f"device {serial}, trustpoint {state.name}: {reason}"
    if state.retryable:
        raise TransientError(message, code=code, retry_after=state.retry_after)
    raise DeviceReportedFailure(message, code=code, report=report)


def _needs_read_back(report: DeviceReport, enrollment_type: EnrollmentType) -> bool:
    if report.identity is Status.AVAILABLE and report.certificate(CertificateRole.IDENTITY) is None:
        return True
    return (enrollment_type is not EnrollmentType.SELF_SIGNED and report.ca is Status.AVAILABLE
            and report.certificate(CertificateRole.CA) is None)


def _describe_key(params: EnrollmentParameters) -> str:
    return f"{params.key_type.value.upper()}-{params.key_size}"


# --- the exchanges ------------------------------------------------------------------------------

def enroll(
    client: DeviceClient,
    device: DeviceAddress,
    params: EnrollmentParameters,
    *,
    mode: Literal["enroll", "re_enroll"],
    steps: StepLog,
) -> DeviceReport:
    """Configure the trustpoint, have the device enroll it, and read back what it installed.

    ``re_enroll`` makes the device generate a new key pair; the new certificate replaces
    the old one. A pending status (a CA holding a SCEP request, a manual CSR) is a result,
    not a failure.
    """
    serial = device.serial
    # The configuration travels with the enroll request: the device applies it, then enrolls.
    state = client.enroll(device, params.name, mode, configuration=params)
    steps.add("configured", f"pushed trustpoint {params.name} to device {serial}: "
                            f"{params.enrollment_type.value}, {_describe_key(params)}")
    report = read_report(state, serial=serial)
    raise_if_failed(state, report, serial=serial)
    verb = "re-enrolled with a new key pair" if mode == "re_enroll" else "enrolled"
    steps.add(mode, f"device {serial} {verb}: {report.summary()}")

    if _needs_read_back(report, params.enrollment_type):
        state = client.get_trustpoint(device, params.name)
        if state is None:
            raise TransientError(
                f"device {serial} enrolled trustpoint {params.name} but no longer lists it",
                code="trustpoint_missing",
            )
        report = read_report(state, serial=serial)
        raise_if_failed(state, report, serial=serial)
        steps.add("read_back", f"read trustpoint {params.name} back: {report.summary()}")
        if _needs_read_back(report, params.enrollment_type):
            raise PermanentError(
                f"device {serial} reports trustpoint {params.name} available but sends no certificate for it",
                code="device_bad_response",
            )
    return report


def install_identity(
    client: DeviceClient,
    device: DeviceAddress,
    params: EnrollmentParameters,
    *,
    certificate_pem: str,
    ca_certificate_pem: str | None,
    steps: StepLog,
) -> DeviceReport:
    """Give a manual trustpoint the identity certificate an operator imported for its CSR.

    The configuration is pushed first: it carries the device's weak-crypto setting, which the
    device applies when it checks the certificate against its key pair and CA.
    """
    serial = device.serial
    configured = client.configure_trustpoint(device, params)
    raise_if_failed(configured, read_report(configured, serial=serial), serial=serial)
    steps.add("configured", f"pushed trustpoint {params.name} to device {serial}")
    state = client.install_identity_certificate(device, params.name, certificate_pem, ca_certificate_pem)
    report = read_report(state, serial=serial)
    raise_if_failed(state, report, serial=serial)
    if report.identity is not Status.AVAILABLE or report.certificate(CertificateRole.IDENTITY) is None:
        raise PermanentError(
            f"device {serial} accepted the identity certificate for trustpoint {params.name} but reports "
            f"{report.summary()}",
            code="device_bad_response",
        )
    steps.add("identity_installed", f"device {serial} installed the imported identity certificate: "
                                    f"{report.summary()}")
    return report


def refresh(client: DeviceClient, device: DeviceAddress, name: str, *, steps: StepLog) -> DeviceReport | None:
    """Read the trustpoint from the device; ``None`` when the device no longer has it.

    A failure the device reports is returned, not raised: refreshing means showing the
    operator what the device has, failures included.
    """
    state = client.get_trustpoint(device, name)
    if state is None:
        steps.add("read", f"device {device.serial} has no trustpoint {name}")
        return None
    report = read_report(state, serial=device.serial)
    steps.add("read", f"read trustpoint {name} from device {device.serial}: {report.summary()}")
    return report


def delete(client: DeviceClient, device: DeviceAddress, name: str, *, steps: StepLog) -> None:
    """Remove the trustpoint from the device; one that is already gone counts as removed."""
    client.delete_trustpoint(device, name)
    steps.add("deleted_on_device", f"removed trustpoint {name} from device {device.serial}")


def push_ca_bundle(client: DeviceClient, device: DeviceAddress, *, version: str, pem: str, steps: StepLog) -> bool:
    """Give the device certfleet's CA bundle ``version`` unless it already holds exactly that
    (same version, same SHA-256); True when it was pushed."""
    serial, digest = device.serial, sha256_hex(pem)
    held = client.get_ca_bundle(device)
    holding = f"CA bundle version {held.version} ({_certificates(held.certificates)})" if held.version else \
        "no CA bundle"
    steps.add("bundle_read", f"device {serial} holds {holding}")
    if held.version == version and held.sha256 == digest:
        steps.add("bundle_up_to_date", f"device {serial} already holds CA bundle version {version}; nothing pushed")
        return False
    installed = client.put_ca_bundle(device, version, pem)
    if (installed.version, installed.sha256) != (version, digest):
        raise PermanentError(
            f"device {serial} was sent CA bundle version {version} (SHA-256 {digest}) but reports version "
            f"{installed.version!r} (SHA-256 {installed.sha256 or 'none'})",
            code="device_bad_response",
        )
    steps.add("bundle_pushed", f"device {serial} installed CA bundle version {version} "
                               f"({_certificates(installed.certificates)}), replacing {holding}")
    return True


def _certificates(count: int) -> str:
    return f"{count} certificate{'s' if count != 1 else ''}"


def regenerate_keyring(client: DeviceClient, device: DeviceAddress, *, steps: StepLog) -> KeyringState:
    """Have the device make its default keyring a new key pair and certificate (its ``system support
    regenerate-security-keyring default``); the keyring as it is afterwards, which must be valid."""
    serial = device.serial
    state = client.regenerate_keyring(device)
    if not state.valid:
        raise PermanentError(
            f"device {serial} regenerated its default keyring but reports it invalid, reason: "
            f"{state.reason or 'none given'}; check the device's clock",
            code="keyring_still_invalid",
        )
    until = f", certificate valid until {state.not_valid_after:%Y-%m-%d %H:%M} UTC" if state.not_valid_after else ""
    steps.add("keyring_regenerated", f"device {serial} made a new default keyring{until}")
    return state
