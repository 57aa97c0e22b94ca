"""Regenerating devices' default keyrings, the fix of F0853 ("default Keyring's certificate is
invalid, reason: expired"): the device's ``system support regenerate-security-keyring default``.

One device gets a job on the jobs queue; a selection (device ids, or every device whose keyring
is expired) gets a batch of jobs on the bulk queue, with the progress any batch has. A worker
runs each job (:mod:`services.worker.runner`) and records the new keyring on the device, so the
next alert pass clears the device's F0853.

A device has at most one regeneration unfinished: a single request for a busy device is refused
(409 ``job_in_progress``), a batch skips it and counts it. As for bulk actions, the devices'
rows are locked first and the unfinished jobs read after, so two requests at once cannot both
add one.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import exists, func, or_
from sqlmodel import Session, select

from services.controller.api.schemas.bulk_enrollments import DeviceSelection, selection_summary
from services.controller.api.schemas.keyrings import KeyringRegenerationPublic
from services.controller.crud import batches
from services.controller.crud.batches import REGENERATE_KEYRING, chunks
from services.controller.crud.bulk_enrollments import select_devices
from services.controller.crud.devices import get_device
from services.controller.queueing.jobs import UNFINISHED, JobInProgress
from services.controller.rules.scope import DomainScope
from shared import alerts
from shared.db import insert_rows
from shared.enums import AlertCode, JobKind, JobReason, JobState
from shared.errors import NotFoundError, ValidationError
from shared.models import Alert, Batch, Device, Job
from shared.settings import Settings

#: The one keyring a device lets certfleet regenerate.
DEFAULT_KEYRING = "default"


def check_keyring(name: str) -> None:
    if name != DEFAULT_KEYRING:
        raise ValidationError(
            f"only the default keyring can be regenerated (regenerate-security-keyring default), not {name!r}",
            code="unknown_keyring",
        )


def _job(device_id: uuid.UUID, domain_id: uuid.UUID, *, settings: Settings, now: datetime, detail: str,
         reason: JobReason, batch_id: uuid.UUID | None = None) -> dict:
    return dict(
        id=uuid.uuid4(), kind=JobKind.REGENERATE_KEYRING.value, trustpoint_id=None, device_id=device_id,
        domain_id=domain_id, trustpoint_name="", state=JobState.QUEUED.value, attempts=0,
        max_attempts=settings.job_max_attempts,
        # If the message is lost before a worker claims the job, the reconciler re-publishes it then.
        lease_expires_at=now + timedelta(seconds=settings.job_lease_seconds),
        steps=[{"at": now.isoformat(), "step": "requested", "detail": detail}],
        batch_id=batch_id, reason=reason.value, created_at=now,
    )


def _unfinished(session: Session, device_ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """Device id -> its unfinished regeneration job, for the devices that have one."""
    rows = session.exec(
        select(Job.device_id, Job.id).where(Job.device_id.in_(device_ids), Job.state.in_(UNFINISHED),
                                            Job.kind == JobKind.REGENERATE_KEYRING.value)
    ).all()
    return {device_id: job_id for device_id, job_id in rows}


def start_one(session: Session, *, scope: DomainScope, device_id: uuid.UUID, settings: Settings, now: datetime,
              requested_by: str = "") -> tuple[Device, Job]:
    """Add a regeneration job for one device of the scope (not committed; the caller commits, then
    publishes). 404 for a device outside the scope, 409 while one is unfinished."""
    device = get_device(session, scope=scope, device_id=device_id)
    session.exec(select(Device.id).where(Device.id == device.id).with_for_update()).first()
    busy = _unfinished(session, [device.id])
    if busy:
        raise JobInProgress(busy[device.id], what=f"the default keyring of device {device.name}")
    by = f" by {requested_by}" if requested_by else ""
    job = Job(**_job(device.id, device.domain_id, settings=settings, now=now, reason=JobReason.OPERATOR,
                     detail=f"regenerate the default keyring of device {device.name} requested{by}"))
    session.add(job)
    return device, job


def expired_devices(session: Session, *, scope: DomainScope) -> list[uuid.UUID]:
    """Devices of the scope's subtree whose default keyring is expired: an open F0853 alert on them, or
    a health read that found their keyring invalid (before any alert pass ran). In id order."""
    open_alert = exists().where(Alert.device_id == Device.id, Alert.code == AlertCode.KEYRING_EXPIRED.value,
                                Alert.state.in_(alerts.open_states()))
    query = select(Device.id).where(or_(open_alert, Device.keyring_valid.is_(False)))
    if not scope.is_root:
        query = query.where(Device.domain_id.in_(scope.subtree))
    return list(session.exec(query.order_by(Device.id)).all())


def _lock_idle(session: Session, device_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(id, domain id) of the devices still there with no unfinished regeneration, locked until the
    transaction ends (in id order: two batches never deadlock)."""
    rows = session.exec(
        select(Device.id, Device.domain_id).where(Device.id.in_(device_ids)).order_by(Device.id).with_for_update()
    ).all()
    busy = _unfinished(session, device_ids)
    return [(row[0], row[1]) for row in rows if row[0] not in busy]


def start_batch(
    session: Session, *, scope: DomainScope, device_ids: list[uuid.UUID] | None, all_expired: bool,
    settings: Settings, now: datetime, requested_by: str = "",
) -> tuple[Batch, list[uuid.UUID]]:
    """Write the batch and a job per selected device with no regeneration unfinished (not committed);
    return the batch and the job ids."""
    if all_expired == (device_ids is not None):
        raise ValidationError('choose the devices one way: {"device_ids": [...]} or {"all_expired": true}',
                              code="invalid_selection")
    if all_expired:
        candidates = expired_devices(session, scope=scope)
        if not candidates:
            raise ValidationError(
                "no device in this domain or its subdomains has an expired default keyring (an open F0853 alert, "
                "or a health check that found it invalid): nothing to regenerate", code="no_expired_keyrings")
        selection: dict = {"all_expired": True}
    else:
        if not device_ids:
            raise ValidationError("device_ids is empty: name the devices whose default keyring to regenerate",
                                  code="empty_selection")
        # 404 devices_not_found for ids outside the domain's subtree, as any device selection.
        chosen = DeviceSelection(device_ids=device_ids)
        rows = select_devices(session, scope=scope, selection=chosen)
        candidates = sorted(row[0] for row in rows)
        selection = selection_summary(chosen.model_dump(mode="json", include={"device_ids"}))
    batch = Batch(domain_id=scope.domain_id, action=REGENERATE_KEYRING, selection=selection,
                  selected=len(candidates), requested_by=requested_by, created_at=now)
    session.add(batch)
    session.flush()
    by = f" by {requested_by}" if requested_by else ""
    detail = f"keyring regeneration {batch.id}{by}"
    job_ids: list[uuid.UUID] = []
    for chunk in chunks(candidates):
        idle = _lock_idle(session, list(chunk))
        if not idle:
            continue
        jobs = [_job(device_id, domain_id, settings=settings, now=now, detail=detail, reason=JobReason.BULK,
                     batch_id=batch.id) for device_id, domain_id in idle]
        insert_rows(session, Job.__table__, jobs)
        job_ids += [job["id"] for job in jobs]
    batch.skipped = batch.selected - len(job_ids)
    session.add(batch)
    return batch, job_ids


def get_batch(session: Session, *, scope: DomainScope, batch_id: uuid.UUID) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None or batch.action != REGENERATE_KEYRING or not scope.sees(batch.domain_id):
        raise NotFoundError(f"keyring regeneration {batch_id} not found in this domain",
                            code="keyring_regeneration_not_found")
    return batch


def list_batches(session: Session, *, scope: DomainScope, offset: int, limit: int) -> tuple[list[Batch], int]:
    conditions = [Batch.action == REGENERATE_KEYRING]
    if not scope.is_root:
        conditions.append(Batch.domain_id.in_(scope.subtree))
    total = session.exec(select(func.count()).select_from(Batch).where(*conditions)).one()
    rows = session.exec(select(Batch).where(*conditions).order_by(Batch.created_at.desc(), Batch.id)
                        .offset(offset).limit(limit)).all()
    return list(rows), total


def progress(session: Session, batch: Batch, *, now: datetime) -> KeyringRegenerationPublic:
    """The batch's counts, failures by error code and ETA."""
    return KeyringRegenerationPublic(**batches.progress_fields(session, batch, now=now), action=batch.action)
