"""The alert a device move raises: one per trustpoint whose enrollment object the device's new
domain may not use (see :mod:`shared.object_reach`), naming the trustpoint, the object and what to
do. The certificates stay on the device; the alert asks for the enrollment to be deleted (or the
device moved back).

A move syncs the device's alerts of this code in its own transaction: they are raised at once, and
cleared at once when the device moves back. The trustpoint's deletion is a worker's job, and the
device may be forgotten: the ``alert-conditions`` pass re-checks the devices with open alerts and
clears those whose condition is gone. New alerts come from moves alone, so the pass never reads
the whole trustpoint table.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from services.controller.alerts import store
from shared import object_reach
from shared.alerts import AlertCondition
from shared.enums import AlertCode
from shared.models import Alert, Device, EnrollmentObject, Trustpoint

CODE = AlertCode.OBJECT_OUT_OF_DOMAIN
#: The description column's size.
_DESCRIPTION = 1024


def device_conditions(session: Session, device: Device) -> list[AlertCondition]:
    """The device's trustpoints whose enrollment object its domain may not use, as alert conditions."""
    rows = session.exec(
        select(Trustpoint.id, Trustpoint.name, EnrollmentObject.name, EnrollmentObject.domain_id)
        .join(EnrollmentObject, EnrollmentObject.id == Trustpoint.enrollment_object_id)
        .where(Trustpoint.device_id == device.id).order_by(Trustpoint.name)
    ).all()
    found = []
    for tp_id, tp_name, object_name, object_domain_id in rows:
        why = object_reach.refusal(session, trustpoint=tp_name, device=device.name, object_name=object_name,
                                   object_domain_id=object_domain_id, domain_id=device.domain_id)
        if why is None:
            continue
        description = f"{why} (certfleet trustpoint delete {device.name} {tp_name})"
        found.append(AlertCondition(
            code=CODE, description=description[:_DESCRIPTION], domain_id=device.domain_id, device_id=device.id,
            device_name=device.name, trustpoint_id=tp_id, trustpoint_name=tp_name))
    return found


def sync_device(session: Session, device: Device, *, now: datetime) -> list[Alert]:
    """Raise, keep or clear the device's alerts of this code as its trustpoints stand now (not
    committed); returns its open ones."""
    store.sync(session, device_conditions(session, device), codes=(CODE,), now=now, device_id=device.id)
    session.flush()
    return sorted(store.open_alerts(session, (CODE,), device_id=device.id), key=lambda a: a.trustpoint_name)


def still_holding(session: Session) -> list[AlertCondition]:
    """For the pass: the conditions of the devices that have open alerts of this code (a device
    that is gone holds none, so its alerts clear)."""
    found: list[AlertCondition] = []
    for device_id in sorted({a.device_id for a in store.open_alerts(session, (CODE,)) if a.device_id}):
        device = session.get(Device, device_id)
        if device is not None:
            found += device_conditions(session, device)
    return found
