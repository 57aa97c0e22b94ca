"""Writing alerts: every change of an alert and its CloudEvent (the outbox row the relay moves
on) go into the caller's transaction together, so a change is never delivered without being
stored, nor stored without being delivered.

:func:`sync` is how checks raise and clear alerts: given every condition that holds now for the
codes it is responsible for, it raises an alert for each new condition, refreshes ``last_seen``
on those still holding (an ``updated`` event only when severity or description changed), and
clears the open alerts whose condition is gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, select

from shared import alerts as catalogue
from shared.alerts import AlertCondition
from shared.enums import AlertCode, AlertState
from shared.errors import ConflictError, NotFoundError
from shared.models import Alert, AlertEvent

#: Ids per IN list.
_CHUNK = 1000


@dataclass
class SyncResult:
    raised: int = 0
    updated: int = 0
    cleared: int = 0
    still_active: int = 0

    def describe(self) -> str:
        return (f"{self.raised} raised, {self.updated} updated, {self.cleared} cleared, "
                f"{self.still_active} unchanged")


def record_event(session: Session, alert: Alert, change: str, *, now: datetime) -> AlertEvent:
    """Add the CloudEvent of ``alert``'s change (as the alert stands now) to the outbox."""
    event_id = uuid.uuid4()
    event = AlertEvent(id=event_id, alert_id=alert.id, domain_id=alert.domain_id, code=alert.code,
                       severity=alert.severity, type=catalogue.event_type(change), time=now,
                       cloudevent=catalogue.cloudevent(alert, change=change, event_id=event_id, time=now))
    session.add(event)
    return event


def open_alerts(session: Session, codes: Iterable[AlertCode | str], *,
                device_id: uuid.UUID | None = None) -> list[Alert]:
    """The open alerts of ``codes``; only the device's with ``device_id``."""
    conditions = [Alert.code.in_([str(c) for c in codes]), Alert.state.in_(catalogue.open_states())]
    if device_id is not None:
        conditions.append(Alert.device_id == device_id)
    return list(session.exec(select(Alert).where(*conditions)).all())


def sync(session: Session, conditions: Iterable[AlertCondition], *, codes: Iterable[AlertCode],
         now: datetime, device_id: uuid.UUID | None = None) -> SyncResult:
    """Make the open alerts of ``codes`` match ``conditions`` (not committed). With ``device_id``,
    the conditions are that device's alone, and only its alerts are raised, kept or cleared (a
    change made to one device, such as a move, syncs its alerts in its own transaction)."""
    codes = set(codes)
    wanted: dict[str, AlertCondition] = {}
    for condition in conditions:
        if condition.code not in codes:
            raise ValueError(f"condition {condition.code} is outside the codes being synced")
        if device_id is not None and condition.device_id != device_id:
            raise ValueError(f"condition {condition.key} is about another device than the one being synced")
        wanted[condition.key] = condition
    result = SyncResult()
    touched: list[uuid.UUID] = []
    for alert in open_alerts(session, codes, device_id=device_id):
        condition = wanted.pop(alert.condition_key or "", None)
        if condition is None:
            clear(session, alert, now=now)
            result.cleared += 1
            continue
        severity = condition.effective_severity.value
        if alert.severity != severity or alert.description != condition.description:
            alert.severity, alert.description, alert.last_seen = severity, condition.description, now
            record_event(session, alert, "updated", now=now)
            result.updated += 1
        else:
            touched.append(alert.id)
    for start in range(0, len(touched), _CHUNK):
        session.execute(update(Alert).where(Alert.id.in_(touched[start:start + _CHUNK]))
                        .values(last_seen=now).execution_options(synchronize_session=False))
    result.still_active = len(touched)
    for condition in wanted.values():
        raise_alert(session, condition, now=now)
        result.raised += 1
    return result


def raise_alert(session: Session, condition: AlertCondition, *, now: datetime) -> Alert:
    """A new active alert for ``condition`` and its ``raised`` event (the caller knows none is open)."""
    alert = Alert(code=condition.code.value, severity=condition.effective_severity.value,
                  description=condition.description, domain_id=condition.domain_id, device_id=condition.device_id,
                  device_name=condition.device_name, trustpoint_id=condition.trustpoint_id,
                  trustpoint_name=condition.trustpoint_name, resource=condition.resource,
                  condition_key=condition.key, state=AlertState.ACTIVE.value, first_seen=now, last_seen=now)
    session.add(alert)
    record_event(session, alert, "raised", now=now)
    return alert


def clear(session: Session, alert: Alert, *, now: datetime) -> None:
    """The condition ended: the alert is cleared and no longer holds its condition's place."""
    alert.state, alert.cleared_at, alert.condition_key = AlertState.CLEARED.value, now, None
    record_event(session, alert, "cleared", now=now)


def acknowledge(session: Session, alert: Alert, *, by: str, now: datetime) -> bool:
    """Someone is on it: an active alert becomes acknowledged (not committed). False when it
    already was; ConflictError for a cleared alert."""
    if alert.state == AlertState.CLEARED.value:
        raise ConflictError(f"alert {alert.id} ({alert.code}) was cleared at {alert.cleared_at:%Y-%m-%d %H:%M:%S} "
                            "UTC: its condition is gone, there is nothing to acknowledge", code="alert_cleared")
    if alert.state == AlertState.ACKNOWLEDGED.value:
        return False
    alert.state, alert.acknowledged_by, alert.acknowledged_at = AlertState.ACKNOWLEDGED.value, by, now
    record_event(session, alert, "acknowledged", now=now)
    return True


def get_alert(session: Session, alert_id: uuid.UUID, *, sees) -> Alert:
    """The alert, when ``sees(domain_id)`` says the caller's domain may see it; else NotFoundError
    (an alert of another domain is not told apart from one that does not exist)."""
    alert = session.get(Alert, alert_id)
    if alert is None or not sees(alert.domain_id):
        raise NotFoundError(f"alert {alert_id} not found in this domain", code="alert_not_found")
    return alert
