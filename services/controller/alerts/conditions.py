"""The conditions that raise alerts, read from what certfleet knows, and the pass that keeps the
alerts in step with them (the ``alert-conditions`` schedule).

One function per alert code: a query that returns only the rows in the condition (through the
indexes on device.keyring_valid, certificate.not_after, trustpoint's statuses, ca_bundle_update's
time), never a whole table, and gives each an :class:`AlertCondition` whose description says
what is wrong and what to do. :func:`run_alert_conditions` syncs them family by family (see
:func:`services.controller.alerts.store.sync`), each family in its own fenced transaction.

A condition that cannot be read (no CA gate to ask, Redis down) is skipped, never synced as
empty: its open alerts stay as they are rather than being cleared by a blind pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, false, or_
from sqlmodel import Session, select

from services.controller.alerts import moves, store
from shared.alerts import AlertCondition, keyring_description
from shared.domains import GLOBAL_DOMAIN_ID
from shared.enums import AlertCode, CertificateRole, EnrollmentType, Severity
from shared.logging import get_logger
from shared.models import CaBundleUpdate, Certificate, Device, Trustpoint
from shared.settings import Settings
from shared.states import Status

log = get_logger(__name__)

#: An expiring certificate's alert turns major this many days before the end.
MAJOR_WITHIN_DAYS = 7
#: CA-bundle updates whose outcome raises CA_BUNDLE_UPDATE_FAILED; the actions that count (not tests).
BUNDLE_FAILURES = ("failed_checks", "invalid", "unreachable")
BUNDLE_ACTIONS = ("run-now", "schedule")
BUNDLE_RESOURCE = "certfleet CA bundle"
#: The column is 1024 characters; an error message quoted in a description gets at most this many.
_QUOTED = 500
_DESCRIPTION = 1024
_ALL_STATUSES = [s.value for s in Status]


class CircuitReader(Protocol):
    """The CA gate, as far as alerts read it (``MemoryCaGate``, ``RedisCaGate``, :class:`RedisCircuits`)."""

    def open_circuits(self) -> dict[str, float]: ...


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _at(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _renew_action(enrollment_type: str, device: str, trustpoint: str) -> str:
    command = f"certfleet trustpoint re-enroll {device} {trustpoint}"
    if enrollment_type == EnrollmentType.MANUAL.value:
        return (f"re-enroll it ({command}), have the new CSR signed (certfleet trustpoint csr) and import the "
                "certificate (certfleet trustpoint import)")
    if enrollment_type == EnrollmentType.PKCS12.value:
        return f"upload a new PKCS12 file to its enrollment object, then re-enroll it ({command})"
    return f"re-enroll it: {command}"


# --- one function per code ---------------------------------------------------------------------


def keyring_expired(session: Session) -> list[AlertCondition]:
    """F0853: every device whose default keyring's certificate the last health read found invalid.
    A device never read (keyring_valid None) raises nothing."""
    rows = session.exec(
        select(Device.id, Device.name, Device.domain_id, Device.keyring_reason)
        .where(Device.keyring_valid == false())
    ).all()
    return [AlertCondition(code=AlertCode.KEYRING_EXPIRED, description=keyring_description(reason),
                           domain_id=domain_id, device_id=device_id, device_name=name)
            for device_id, name, domain_id, reason in rows]


def _identity_certificates(*conditions):
    """The installed identity certificates (not their PEM) with their trustpoint and device."""
    return (
        select(Certificate.not_after, Trustpoint.id, Trustpoint.name, Trustpoint.domain_id,
               Trustpoint.enrollment_type, Device.id, Device.name)
        .join(Trustpoint, Trustpoint.id == Certificate.trustpoint_id)
        .join(Device, Device.id == Trustpoint.device_id)
        .where(Certificate.role == CertificateRole.IDENTITY.value, Certificate.chain_position == 0, *conditions)
    )


def certificates_expiring(session: Session, *, now: datetime, within_days: int) -> list[AlertCondition]:
    """CERTIFICATE_EXPIRING: identity certificates ending within ``within_days`` days but not yet
    ended; a warning, major in the last week. The description names the band (not a day count),
    so it changes, and sends an ``updated`` event, only when the alert escalates."""
    rows = session.exec(_identity_certificates(Certificate.not_after > now,
                                               Certificate.not_after <= now + timedelta(days=within_days))).all()
    found = []
    for not_after, tp_id, tp_name, domain_id, method, device_id, device_name in rows:
        major = not_after <= now + timedelta(days=MAJOR_WITHIN_DAYS)
        band = min(MAJOR_WITHIN_DAYS, within_days) if major else within_days
        description = (f"the identity certificate of trustpoint {tp_name} on device {device_name} expires in "
                       f"under {band} days, on {_at(not_after)}: {_renew_action(method, device_name, tp_name)}")
        found.append(AlertCondition(
            code=AlertCode.CERTIFICATE_EXPIRING, severity=Severity.MAJOR if major else Severity.WARNING,
            description=_clip(description, _DESCRIPTION), domain_id=domain_id, device_id=device_id,
            device_name=device_name, trustpoint_id=tp_id, trustpoint_name=tp_name))
    return found


def certificates_expired(session: Session, *, now: datetime) -> list[AlertCondition]:
    """CERTIFICATE_EXPIRED: installed identity certificates past their end."""
    rows = session.exec(_identity_certificates(Certificate.not_after <= now)).all()
    return [AlertCondition(
        code=AlertCode.CERTIFICATE_EXPIRED, domain_id=domain_id, device_id=device_id, device_name=device_name,
        trustpoint_id=tp_id, trustpoint_name=tp_name,
        description=_clip(f"the identity certificate of trustpoint {tp_name} on device {device_name} expired on "
                          f"{_at(not_after)}; connections that rely on it fail: "
                          f"{_renew_action(method, device_name, tp_name)}", _DESCRIPTION))
        for not_after, tp_id, tp_name, domain_id, method, device_id, device_name in rows]


def _trustpoints(*conditions):
    return (select(Trustpoint, Device.name).join(Device, Device.id == Trustpoint.device_id).where(*conditions))


def _identity_is(status: Status):
    # With the CA statuses listed, the (ca_status, identity_status) index serves the condition.
    return and_(Trustpoint.ca_status.in_(_ALL_STATUSES), Trustpoint.identity_status == status.value)


def certificates_revoked(session: Session) -> list[AlertCondition]:
    """CERTIFICATE_REVOKED: trustpoints whose identity certificate the revocation scan found revoked."""
    found = []
    for tp, device_name in session.exec(_trustpoints(_identity_is(Status.REVOKED))).all():
        when = f" on {_at(tp.revoked_at)}" if tp.revoked_at else ""
        reason = f" (reason: {tp.revocation_reason})" if tp.revocation_reason else ""
        found.append(AlertCondition(
            code=AlertCode.CERTIFICATE_REVOKED, domain_id=tp.domain_id, device_id=tp.device_id,
            device_name=device_name, trustpoint_id=tp.id, trustpoint_name=tp.name,
            description=_clip(f"the CA revoked the identity certificate of trustpoint {tp.name} on device "
                              f"{device_name}{when}{reason}; peers that check revocation refuse it: "
                              f"{_renew_action(tp.enrollment_type, device_name, tp.name)}", _DESCRIPTION)))
    return found


def enrollments_failed(session: Session) -> list[AlertCondition]:
    """ENROLLMENT_FAILED: trustpoints whose CA or identity certificate failed, with the error."""
    # A trustpoint whose renewal failed is RENEWAL_FAILED's (its installed certificate still works).
    query = _trustpoints(or_(Trustpoint.ca_status == Status.FAILED.value, _identity_is(Status.FAILED)),
                         Trustpoint.renewal_failures == 0)
    found = []
    for tp, device_name in session.exec(query).all():
        which = "CA certificate" if tp.ca_status == Status.FAILED.value else "identity certificate"
        error = _clip(f"{tp.error_code or 'failed'}: {tp.error_message or 'no detail recorded'}", _QUOTED)
        found.append(AlertCondition(
            code=AlertCode.ENROLLMENT_FAILED, domain_id=tp.domain_id, device_id=tp.device_id,
            device_name=device_name, trustpoint_id=tp.id, trustpoint_name=tp.name,
            description=_clip(f"the {which} of trustpoint {tp.name} on device {device_name} failed: {error}. "
                              f"Fix the cause, then {_renew_action(tp.enrollment_type, device_name, tp.name)}",
                              _DESCRIPTION)))
    return found


def renewals_failed(session: Session) -> list[AlertCondition]:
    """RENEWAL_FAILED: trustpoints whose automatic renewal failed since their last success."""
    found = []
    for tp, device_name in session.exec(_trustpoints(Trustpoint.renewal_failures > 0)).all():
        error = _clip(f"{tp.renewal_error_code or 'failed'}: {tp.renewal_error_message or 'no detail recorded'}",
                      _QUOTED)
        retry = f" certfleet tries again at {_at(tp.renewal_due_at)};" if tp.renewal_due_at else ""
        found.append(AlertCondition(
            code=AlertCode.RENEWAL_FAILED, domain_id=tp.domain_id, device_id=tp.device_id,
            device_name=device_name, trustpoint_id=tp.id, trustpoint_name=tp.name,
            description=_clip(f"renewing the identity certificate of trustpoint {tp.name} on device {device_name} "
                              f"failed {tp.renewal_failures} time(s) in a row, last: {error};{retry} fix the cause "
                              f"or {_renew_action(tp.enrollment_type, device_name, tp.name)}", _DESCRIPTION)))
    return found


def cas_unreachable(circuits: CircuitReader) -> list[AlertCondition]:
    """CA_UNREACHABLE: CA endpoints whose circuit is open in the CA gate (Global; the resource is
    the endpoint). Raises what the gate's read raises."""
    found = []
    for endpoint, down_since_ms in sorted(circuits.open_circuits().items()):
        since = ""
        if down_since_ms > 0:
            since = f" since {_at(datetime.fromtimestamp(down_since_ms / 1000, tz=UTC))}"
        found.append(AlertCondition(
            code=AlertCode.CA_UNREACHABLE, domain_id=GLOBAL_DOMAIN_ID, resource=endpoint,
            description=_clip(f"the CA at {endpoint} has been unavailable{since}: enrollments and renewals "
                              "through it wait until it answers again; check that the CA is running and "
                              "reachable from the workers", _DESCRIPTION)))
    return found


def bundle_update_failed(session: Session) -> list[AlertCondition]:
    """CA_BUNDLE_UPDATE_FAILED: the latest CA-bundle update (run-now or scheduled; tests do not
    count) failed. A later update that succeeds or finds the bundle up to date clears it."""
    latest = session.exec(
        select(CaBundleUpdate).where(CaBundleUpdate.action.in_(BUNDLE_ACTIONS))
        .order_by(CaBundleUpdate.created_at.desc()).limit(1)
    ).first()
    if latest is None or latest.outcome not in BUNDLE_FAILURES:
        return []
    servers = "; ".join(f"{f.get('server', '?')}: {f.get('reason', '')}" for f in latest.failed_servers[:5])
    if len(latest.failed_servers) > 5:
        servers += f"; and {len(latest.failed_servers) - 5} more"
    detail = _clip(servers or latest.detail or "no detail recorded", _QUOTED)
    if latest.outcome == "failed_checks":
        action = ("certfleet cert-update test shows the failing connections; fix them, or replace anyway with "
                  "certfleet cert-update run-now --force")
    else:
        action = "check CERTFLEET_CA_BUNDLE_URL and the bundle source, then certfleet cert-update run-now"
    return [AlertCondition(
        code=AlertCode.CA_BUNDLE_UPDATE_FAILED, domain_id=GLOBAL_DOMAIN_ID, resource=BUNDLE_RESOURCE,
        description=_clip(f"certfleet's CA bundle update ({latest.action}, {_at(latest.created_at)}) failed: "
                          f"{latest.outcome}: {detail}. {action}", _DESCRIPTION))]


# --- the pass ----------------------------------------------------------------------------------


def run_alert_conditions(
    session: Session, *, now: datetime, settings: Settings, circuits: CircuitReader | None,
    fence: Callable[[Session], None] = lambda session: None,
) -> str:
    """Raise, update and clear every code's alerts from the conditions that hold at ``now``; each
    family is synced, fenced and committed on its own. ``circuits`` None: CA_UNREACHABLE is not
    evaluated (its alerts stay as they are). Returns what changed, in a line."""
    families: list[tuple[tuple[AlertCode, ...], Callable[[], list[AlertCondition]]]] = [
        ((AlertCode.KEYRING_EXPIRED,), lambda: keyring_expired(session)),
        ((AlertCode.CERTIFICATE_EXPIRING, AlertCode.CERTIFICATE_EXPIRED, AlertCode.CERTIFICATE_REVOKED),
         lambda: [*certificates_expiring(session, now=now, within_days=settings.alert_expiring_days),
                  *certificates_expired(session, now=now), *certificates_revoked(session)]),
        ((AlertCode.ENROLLMENT_FAILED, AlertCode.RENEWAL_FAILED),
         lambda: [*enrollments_failed(session), *renewals_failed(session)]),
        ((AlertCode.CA_BUNDLE_UPDATE_FAILED,), lambda: bundle_update_failed(session)),
        # Raised by device moves; the pass clears those whose trustpoint or device is gone.
        ((AlertCode.OBJECT_OUT_OF_DOMAIN,), lambda: moves.still_holding(session)),
    ]
    notes: list[str] = []
    if circuits is None:
        notes.append("CA endpoints not checked (no shared CA gate to read)")
    else:
        try:
            unreachable = cas_unreachable(circuits)
        except Exception as exc:  # Redis down: leave the CA alerts as they are
            log.warning("could not read the CA gate's circuits", error=str(exc))
            notes.append(f"CA endpoints not checked ({type(exc).__name__}: {exc})")
        else:
            families.append(((AlertCode.CA_UNREACHABLE,), lambda: unreachable))
    total = store.SyncResult()
    for codes, read in families:
        result = store.sync(session, read(), codes=codes, now=now)
        fence(session)
        session.commit()
        total.raised += result.raised
        total.updated += result.updated
        total.cleared += result.cleared
        total.still_active += result.still_active
    return "; ".join([f"alerts: {total.describe()}", *notes])


@contextlib.contextmanager
def gate_circuits(settings: Settings) -> Iterator[CircuitReader | None]:
    """The CA gate the workers share (Redis, at the broker's URL), or None with the in-process
    broker: its gate lives in the worker's memory, which the controller cannot read."""
    if not settings.broker_url:
        yield None
        return
    from shared.ca_circuits import RedisCircuits

    reader = RedisCircuits.from_url(settings.broker_url)
    try:
        yield reader
    finally:
        reader.close()
