"""Bulk actions: one trustpoint action (re-enroll, refresh, delete…) on the trustpoints of one
enrollment object over a device selection, and weak-crypto switched on many devices at once.

Like a bulk enrollment, the jobs are written together (a COPY on PostgreSQL) in one transaction and
published on the bulk queue after the commit; progress is read from the jobs. A trustpoint
busy with an unfinished job is skipped (and counted), under the same guard a single action
has, so no trustpoint ever gets two unfinished jobs.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, update
from sqlmodel import Session, select

from services.controller.api.schemas.bulk_actions import BulkActionPublic, TrustpointFilters
from services.controller.api.schemas.bulk_enrollments import DeviceSelection, selection_summary
from services.controller.crud import batches
from services.controller.crud.batches import chunks
from services.controller.crud.bulk_enrollments import device_filters, select_devices
from services.controller.crud.domains import being_deleted
from services.controller.crud.enrollment_objects import get_object
from services.controller.queueing.jobs import UNFINISHED
from services.controller.rules.scope import DomainScope
from services.controller.rules.trustpoint_actions import TrustpointAction, check_confirmed
from shared.db import insert_rows
from shared.enums import CertificateRole, JobKind, JobReason, JobState
from shared.errors import ConflictError, ValidationError
from shared.models import Batch, Certificate, Device, Job, Trustpoint
from shared.settings import Settings
from shared.states import Status

WEAK_CRYPTO_WARNING = (
    "Enabling weak-crypto lets {count} of the selected devices use weak ciphers in certificates, which "
    "reduces security. Confirm to enable it: send the same selection with {{\"weak_crypto\": true, "
    "\"confirm\": true}}."
)


def select_trustpoints(
    session: Session, *, scope: DomainScope, object_id: uuid.UUID, selection: DeviceSelection,
    filters: TrustpointFilters, now: datetime,
) -> list[uuid.UUID]:
    """Ids of the object's trustpoints on the selected devices of the scope's subtree that
    match the filters, in id order (the order they are locked in)."""
    query = select(Trustpoint.id).where(Trustpoint.enrollment_object_id == object_id)
    if not scope.is_root:
        query = query.where(Trustpoint.domain_id.in_(scope.subtree))
    if filters.identity_status is not None:
        query = query.where(Trustpoint.identity_status == Status(filters.identity_status).value)
    if filters.expiring_within_days is not None:
        until = now + timedelta(days=filters.expiring_within_days)
        query = query.where(
            select(Certificate.id).where(Certificate.trustpoint_id == Trustpoint.id,
                                         Certificate.role == CertificateRole.IDENTITY.value,
                                         Certificate.not_after <= until).exists()
        )
    if selection.device_ids is not None:
        device_ids = [row[0] for row in select_devices(session, scope=scope, selection=selection)]
        return sorted(tp for chunk in chunks(device_ids)
                      for tp in session.exec(query.where(Trustpoint.device_id.in_(chunk))).all())
    if not selection.all:
        query = query.join(Device, Device.id == Trustpoint.device_id).where(*device_filters(selection))
    return list(session.exec(query.order_by(Trustpoint.id)).all())


def describe(selection: DeviceSelection, filters: TrustpointFilters) -> str:
    """The selection and filters in words, for a message."""
    if selection.all:
        parts = ["every device"]
    elif selection.device_ids is not None:
        parts = [f"{len(selection.device_ids)} devices by id"]
    else:
        named = [f"named {selection.name_pattern!r}"] if selection.name_pattern else []
        parts = [" ".join(["devices", *named, *([f"of model {selection.model!r}"] if selection.model else [])])]
    if filters.identity_status is not None:
        parts.append(f"identity status {Status(filters.identity_status).value}")
    if filters.expiring_within_days is not None:
        parts.append(f"identity certificate ending within {filters.expiring_within_days} days")
    return ", ".join(parts)


def lock_idle(session: Session, ids: list[uuid.UUID]) -> list[tuple]:
    """(id, device_id, domain_id, name) of the trustpoints of ``ids`` that still exist and have
    no unfinished job, locked until the transaction ends.

    Locked first, checked after, as a single action does: PostgreSQL waits here for a
    concurrent single action's transaction on one of these rows, and the check that follows (a
    new statement, so a new snapshot) sees the job it made; a single action coming later waits
    for this transaction and then sees this batch's job. On SQLite the batch's insert has taken
    the write lock already. Rows are locked in id order, so two bulk actions never deadlock.
    """
    rows = session.exec(
        select(Trustpoint.id, Trustpoint.device_id, Trustpoint.domain_id, Trustpoint.name)
        .where(Trustpoint.id.in_(ids)).order_by(Trustpoint.id).with_for_update()
    ).all()
    busy = set(session.exec(
        select(Job.trustpoint_id).where(Job.trustpoint_id.in_(ids), Job.state.in_(UNFINISHED))
    ).all())
    return [tuple(row) for row in rows if row[0] not in busy]


def create_action_batch(
    session: Session, *, scope: DomainScope, action: TrustpointAction, enrollment_object_id: uuid.UUID,
    selection: DeviceSelection, filters: TrustpointFilters, confirm: bool, settings: Settings, now: datetime,
    requested_by: str = "",
) -> tuple[Batch, list[uuid.UUID]]:
    """Write the batch and one job per idle selected trustpoint (not committed); return the
    batch and the job ids."""
    obj = get_object(session, scope=scope, object_id=enrollment_object_id)
    candidates = select_trustpoints(session, scope=scope, object_id=obj.id, selection=selection, filters=filters,
                                    now=now)
    if not candidates:
        raise ValidationError(
            f"no trustpoint {obj.name} in this domain matches the selection ({describe(selection, filters)}): "
            "nothing to act on; check the devices and filters, or the enrollment object",
            code="empty_selection",
        )
    check_confirmed(action, confirm=confirm, name=obj.name, count=len(candidates))
    stored = selection_summary(selection.model_dump(mode="json", exclude_defaults=True))
    if given := filters.model_dump(mode="json", exclude_none=True):
        stored["filters"] = given
    batch = Batch(domain_id=scope.domain_id, action=action.name, enrollment_object_id=obj.id,
                  trustpoint_name=obj.name, selection=stored, selected=len(candidates),
                  requested_by=requested_by, created_at=now)
    session.add(batch)
    session.flush()
    lease_until = now + timedelta(seconds=settings.job_lease_seconds)
    step = [{"at": now.isoformat(), "step": "requested",
             "detail": f"bulk {action.name} {batch.id}" + (f" by {requested_by}" if requested_by else "")}]
    # A re-enrollment deploys the object again: not in a subdomain being deleted (skipped and counted).
    deleting = being_deleted(session) if action.kind is JobKind.RE_ENROLL else frozenset()
    job_ids: list[uuid.UUID] = []
    for chunk in chunks(candidates):
        idle = [row for row in lock_idle(session, list(chunk)) if row[2] not in deleting]
        if not idle:
            continue
        if action.restarts_statuses:
            session.execute(
                update(Trustpoint).where(Trustpoint.id.in_([tp_id for tp_id, *_ in idle])).values(
                    ca_status=Status.IN_PROGRESS.value, identity_status=Status.IN_PROGRESS.value, error_code=None,
                    error_message=None, status_changed_at=now, updated_at=now,
                ).execution_options(synchronize_session=False)
            )
        jobs = [dict(
            id=uuid.uuid4(), kind=action.kind.value, trustpoint_id=tp_id, device_id=device_id, domain_id=domain_id,
            trustpoint_name=name, state=JobState.QUEUED.value, attempts=0, max_attempts=settings.job_max_attempts,
            lease_expires_at=lease_until, steps=step, batch_id=batch.id, reason=JobReason.BULK.value,
            created_at=now,
        ) for tp_id, device_id, domain_id, name in idle]
        insert_rows(session, Job.__table__, jobs)
        job_ids += [job["id"] for job in jobs]
    batch.skipped = batch.selected - len(job_ids)
    session.add(batch)
    return batch, job_ids


def get_batch(session: Session, *, scope: DomainScope, batch_id: uuid.UUID) -> Batch:
    return batches.get_batch(session, scope=scope, batch_id=batch_id, enrollments=False)


def list_batches(session: Session, *, scope: DomainScope, offset: int, limit: int) -> tuple[list[Batch], int]:
    return batches.list_batches(session, scope=scope, offset=offset, limit=limit, enrollments=False)


def progress(session: Session, batch: Batch, *, now: datetime) -> BulkActionPublic:
    """The batch's counts, failures by error code and ETA, with its action and filters."""
    fields = batches.progress_fields(session, batch, now=now)
    fields["selection"] = {k: v for k, v in fields["selection"].items() if k != "filters"}
    return BulkActionPublic(**fields, action=batch.action, filters=batch.selection.get("filters", {}))


def set_weak_crypto(
    session: Session, *, scope: DomainScope, selection: DeviceSelection, weak_crypto: bool, confirm: bool
) -> tuple[int, int]:
    """Switch weak-crypto on the selected devices (not committed); (selected, changed).
    Enabling it on any device that has it off needs ``confirm``, as for one device."""
    ids = [row[0] for row in select_devices(session, scope=scope, selection=selection)]
    if not ids:
        raise ValidationError("the selection matches no device in this domain", code="empty_selection")
    if weak_crypto and not confirm:
        off = sum(session.exec(select(func.count()).select_from(Device).where(
            Device.id.in_(chunk), Device.weak_crypto.is_(False))).one() for chunk in chunks(ids))
        if off:
            refused = ConflictError(WEAK_CRYPTO_WARNING.format(count=off), code="weak_crypto_confirmation_required")
            refused.extensions = {"devices": off}
            raise refused
    changed = 0
    for chunk in chunks(ids):
        changed += session.execute(
            update(Device).where(Device.id.in_(chunk), Device.weak_crypto != weak_crypto)
            .values(weak_crypto=weak_crypto).execution_options(synchronize_session=False)
        ).rowcount
    return len(ids), changed
