"""A device's trustpoints: reading a configuration, configuring, enrolling, removing.

Pure state changes on :mod:`.fleet` records; the key generation and certificates come
from :mod:`.enrollers`. Statuses move only through :func:`shared.states.transition`, so
the device follows the same table as the management center.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any, Literal

from cryptography import x509

from services.device_sim import manual, validation
from services.device_sim.fleet import Device, InstalledCert, Trustpoint
from services.device_sim.tasks import (
    CaClientSettings,
    CsrPending,
    CurrentIdentity,
    Enrolled,
    EnrollmentTask,
    HeldByCa,
    HeldRequest,
    Outcome,
    Slot,
)
from shared.enrollment import EnrollmentParameters, SubjectFields, check_trustpoint_name
from shared.enums import CertificateRole, EnrollmentType
from shared.errors import NotFoundError, ValidationError
from shared.pki import to_pem
from shared.states import Status, transition

FIELDS = frozenset(f.name for f in fields(EnrollmentParameters))
SUBJECT_FIELDS = frozenset(f.name for f in fields(SubjectFields))
BOOL_FIELDS = ("include_fqdn", "include_device_ip", "include_serial_number")
INT_FIELDS = ("key_size", "validity_days")
TEXT_FIELDS = ("key_type", "enrollment_type")


def _invalid(message: str, code: str = "invalid_configuration") -> ValidationError:
    return ValidationError(message, code=code)


def parse_configuration(name: str, body: Any) -> EnrollmentParameters:
    """The trustpoint configuration from a PUT body, checked field by field.

    The body's ``name`` may be left out; when given it must match the trustpoint in the URL.
    """
    check_trustpoint_name(name)
    if not isinstance(body, dict):
        raise _invalid("a trustpoint configuration is a JSON object (EnrollmentParameters.to_wire())")
    data = dict(body)
    if data.setdefault("name", name) != name:
        raise _invalid(f"configuration names trustpoint {data['name']!r} but was sent to {name!r}",
                       code="name_mismatch")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise _invalid(f"unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(FIELDS))}")
    if "enrollment_type" not in data:
        raise _invalid("enrollment_type is required", code="invalid_enrollment_type")
    for key in TEXT_FIELDS:
        if key in data and not isinstance(data[key], str):
            raise _invalid(f"{key} must be a string, not {data[key]!r}")
    if data["enrollment_type"] not in set(EnrollmentType):
        raise _invalid(
            f"enrollment type {data['enrollment_type']!r} is not one of "
            f"{', '.join(t.value for t in EnrollmentType)}",
            code="invalid_enrollment_type",
        )
    for key in BOOL_FIELDS:
        if key in data and not isinstance(data[key], bool):
            raise _invalid(f"{key} must be true or false, not {data[key]!r}")
    for key in INT_FIELDS:
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool)):
            raise _invalid(f"{key} must be an integer, not {data[key]!r}")
    subject = data.get("subject", {})
    if not isinstance(subject, dict):
        raise _invalid("subject must be an object of name fields", code="invalid_subject")
    unknown = sorted(set(subject) - SUBJECT_FIELDS)
    bad = [k for k, v in subject.items() if not isinstance(v, str)]
    if unknown or bad:
        raise _invalid(
            f"subject fields must be strings among {', '.join(sorted(SUBJECT_FIELDS))}; "
            f"got {', '.join(unknown + bad)}",
            code="invalid_subject",
        )
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise _invalid("options must be an object")
    if not isinstance(options.get("weak_crypto", False), bool):
        raise _invalid(f"options.weak_crypto must be true or false, not {options['weak_crypto']!r}")
    if "validation" in options:
        validation.check_settings(options["validation"])
    try:
        return EnrollmentParameters.from_wire(data)
    except ValidationError:
        raise
    except (TypeError, ValueError) as exc:  # anything the checks above did not foresee
        raise _invalid(f"trustpoint configuration is malformed: {exc}") from None


def find(device: Device, name: str) -> Trustpoint:
    trustpoint = device.trustpoints.get(name)
    if trustpoint is None:
        raise NotFoundError(f"device {device.serial} has no trustpoint {name!r}", code="trustpoint_not_found")
    return trustpoint


def configure(device: Device, params: EnrollmentParameters, *, now: datetime) -> Trustpoint:
    """Create or update the trustpoint. Installed certificates stay until the next enrollment;
    a failed trustpoint goes back to in progress, as the new configuration is a new attempt."""
    # Device settings deployed with the trustpoint apply first: the enrollment depends on them.
    if "weak_crypto" in params.options:
        device.weak_crypto = params.options["weak_crypto"]
    trustpoint = device.trustpoints.get(params.name)
    if trustpoint is None:
        trustpoint = Trustpoint(name=params.name, params=params, status_changed_at=now)
        device.trustpoints[params.name] = trustpoint
        return trustpoint
    # An identical configuration (a redelivered job) is no change for an enrollment under way.
    if params != trustpoint.params:
        trustpoint.params = params
    _retry_failed(trustpoint, now=now)
    return trustpoint


def is_current(trustpoint: Trustpoint, mode: Literal["enroll", "re_enroll"]) -> bool:
    """An enroll repeated (a redelivered message) changes nothing when the certificate was
    made for this very configuration; a re-enroll always makes a new key pair."""
    return (
        mode == "enroll"
        and trustpoint.identity_status == Status.AVAILABLE
        and trustpoint.issued_for == trustpoint.params
    )


def begin(device: Device, trustpoint: Trustpoint, *, re_enroll: bool, now: datetime,
          ca: CaClientSettings | None = None) -> EnrollmentTask:
    transition(trustpoint, now=now, ca=Status.IN_PROGRESS, identity=Status.IN_PROGRESS)
    trustpoint.retryable = False
    return _task(device, trustpoint, re_enroll=re_enroll, now=now, ca=ca)


def resume(device: Device, trustpoint: Trustpoint, *, now: datetime,
           ca: CaClientSettings | None = None) -> EnrollmentTask:
    """Ask the CA again about the request it holds; the statuses stay as they are meanwhile."""
    renewal = trustpoint.held is not None and trustpoint.held.renewal
    return _task(device, trustpoint, re_enroll=renewal, now=now, ca=ca)


def _task(device: Device, trustpoint: Trustpoint, *, re_enroll: bool, now: datetime,
          ca: CaClientSettings | None) -> EnrollmentTask:
    return EnrollmentTask(
        params=trustpoint.params, device=device.identity, weak_crypto=device.weak_crypto,
        re_enroll=re_enroll, now=now, ca=ca or CaClientSettings(),
        current=current_identity(trustpoint) if re_enroll else None, held=trustpoint.held,
    )


def current_identity(trustpoint: Trustpoint) -> CurrentIdentity | None:
    """The installed identity certificate with its key: what a renewal authenticates with."""
    pem = next((c.pem for c in trustpoint.certificates
                if c.role == CertificateRole.IDENTITY.value and c.chain_position == 0), None)
    if pem is None or trustpoint.private_key is None:
        return None
    return CurrentIdentity(certificate=x509.load_pem_x509_certificate(pem.encode()),
                           private_key=trustpoint.private_key)


def held_until(trustpoint: Trustpoint, held: HeldRequest) -> datetime:
    """When the device stops asking the CA about a held request on its own: the enrollment
    object's retry count times its retry period after the first ask (10 x 1 minute by default),
    unless the enroller set its own deadline."""
    if held.poll_until is not None:
        return held.poll_until
    options = trustpoint.params.options
    count, period = options.get("retry_count", 10), options.get("retry_period_minutes", 1)
    if not isinstance(count, int) or not isinstance(period, int | float):
        count, period = 10, 1
    return held.first_asked_at + timedelta(minutes=max(count, 1) * max(period, 0))


def finish(trustpoint: Trustpoint, task: EnrollmentTask, outcome: Outcome, *, now: datetime) -> None:
    """Install what the enrollment produced, or record why it failed. On failure, and while the
    CA holds the request, the previously installed identity certificate stays, as on a real
    device; CA certificates obtained on the way are installed."""
    if isinstance(outcome, Enrolled):
        trustpoint.private_key = outcome.private_key
        trustpoint.certificates = [_installed(slot) for slot in outcome.certificates]
        trustpoint.issued_for = task.params
        trustpoint.held = None
        transition(trustpoint, now=now, ca=outcome.ca_status, identity=outcome.identity_status)
        trustpoint.retryable = False
        return
    if isinstance(outcome, CsrPending):
        manual.install_pending(trustpoint, outcome, now=now)
        return
    if isinstance(outcome, HeldByCa):
        trustpoint.held = outcome.request
        _install_ca(trustpoint, outcome.ca_certificates)
        transition(trustpoint, now=now, ca=Status.AVAILABLE, identity=Status.PENDING)
        trustpoint.retryable = False
        return
    if not outcome.retryable:
        trustpoint.held = None  # the CA will not issue it: a new enrollment files a new request
    if outcome.ca_certificates:
        _install_ca(trustpoint, outcome.ca_certificates)
        transition(trustpoint, now=now, ca=Status.AVAILABLE, identity=Status.FAILED,
                   error_code=outcome.code, error_message=outcome.message)
    else:
        transition(trustpoint, now=now, ca=Status.FAILED, identity=Status.FAILED,
                   error_code=outcome.code, error_message=outcome.message)
    trustpoint.retryable, trustpoint.retry_after = outcome.retryable, outcome.retry_after


def _installed(slot: Slot) -> InstalledCert:
    role, position, cert = slot
    return InstalledCert(role=role.value, chain_position=position, pem=to_pem(cert))


def _install_ca(trustpoint: Trustpoint, slots: tuple[Slot, ...]) -> None:
    identity = [c for c in trustpoint.certificates if c.role != CertificateRole.CA.value]
    trustpoint.certificates = identity + [_installed(slot) for slot in slots]


def remove(device: Device, name: str) -> None:
    device.trustpoints.pop(name, None)


def _retry_failed(trustpoint: Trustpoint, *, now: datetime) -> None:
    failed = Status.FAILED.value
    transition(
        trustpoint, now=now,
        ca=Status.IN_PROGRESS if trustpoint.ca_status == failed else None,
        identity=Status.IN_PROGRESS if trustpoint.identity_status == failed else None,
    )
    trustpoint.retryable = False
