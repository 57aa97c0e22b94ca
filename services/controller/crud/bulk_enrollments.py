"""Bulk enrollment: install one enrollment object on many devices at once.

Trustpoints and jobs are written in one transaction (a COPY each on PostgreSQL), then the job
ids are published to the bulk queue, so an operator's single-device actions (on the jobs
queue) are never stuck behind ten thousand bulk jobs. Progress is read from the jobs.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlmodel import Session, select

from services.controller.api.schemas.bulk_enrollments import (
    MAX_DEVICE_IDS,
    BulkEnrollmentPublic,
    DeviceSelection,
    selection_summary,
)
from services.controller.crud import batches
from services.controller.crud.batches import INSERT_CHUNK, chunks
from services.controller.crud.domains import being_deleted, ensure_not_being_deleted
from services.controller.crud.enrollment_objects import get_object
from services.controller.rules.scope import DomainScope
from shared.db import insert_rows
from shared.enums import EnrollmentType, JobKind, JobReason, JobState
from shared.errors import ConflictError, NotFoundError, ValidationError
from shared.models import Batch, Device, Job, Trustpoint
from shared.settings import Settings
from shared.states import Status


def like_pattern(glob: str) -> str:
    """A shell-style pattern as a SQL LIKE pattern (escape character '\\')."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def select_devices(session: Session, *, scope: DomainScope, selection: DeviceSelection) -> list[tuple]:
    """(id, domain_id) of the selected devices in the scope's subtree, in name order."""
    if selection.device_ids is not None and len(selection.device_ids) > MAX_DEVICE_IDS:
        raise ValidationError(
            f"the selection names {len(selection.device_ids)} distinct devices; at most {MAX_DEVICE_IDS} per request: "
            'split it, or select with {"all": true} or a name_pattern/model filter', code="selection_too_large")
    query = select(Device.id, Device.domain_id)
    if not scope.is_root:
        query = query.where(Device.domain_id.in_(scope.subtree))
    if selection.device_ids is not None:
        wanted = set(selection.device_ids)
        rows = [r for chunk in chunks(list(wanted), INSERT_CHUNK)
                for r in session.exec(query.where(Device.id.in_(chunk))).all()]
        missing = wanted - {r[0] for r in rows}
        if missing:
            raise NotFoundError(
                f"{len(missing)} of the selected devices are not in this domain, e.g. {sorted(map(str, missing))[0]}",
                code="devices_not_found",
            )
        return rows
    return list(session.exec(query.where(*device_filters(selection)).order_by(Device.name)).all())


def device_filters(selection: DeviceSelection) -> list:
    """Conditions on the device table for a name-pattern and model selection (none for the others)."""
    conditions = []
    if selection.name_pattern:
        conditions.append(Device.name.like(like_pattern(selection.name_pattern), escape="\\"))
    if selection.model:
        conditions.append(Device.model == selection.model)
    return conditions


def create_batch(
    session: Session, *, scope: DomainScope, enrollment_object_id: uuid.UUID, selection: DeviceSelection,
    settings: Settings, now: datetime, requested_by: str = "",
) -> tuple[Batch, list[uuid.UUID]]:
    """Write the batch, its trustpoints and jobs (not committed); return the batch and job ids."""
    obj = get_object(session, scope=scope, object_id=enrollment_object_id)
    if obj.enrollment_type == EnrollmentType.PKCS12 and obj.pkcs12_blob is None:
        raise ConflictError(f"enrollment object {obj.name} has no PKCS12 file yet; upload it first",
                            code="pkcs12_file_missing")
    ensure_not_being_deleted(session, scope.domain_id, what="a bulk enrollment")
    devices = select_devices(session, scope=scope, selection=selection)
    if not devices:
        raise ValidationError("the selection matches no device in this domain", code="empty_selection")
    # Devices of a subdomain being deleted get nothing new: skipped, like those that have the trustpoint.
    deleting = being_deleted(session)
    already = {device_id for device_id, domain_id in devices if domain_id in deleting}
    for chunk in chunks([d[0] for d in devices if d[0] not in already], INSERT_CHUNK):
        already.update(session.exec(
            select(Trustpoint.device_id).where(Trustpoint.device_id.in_(chunk), Trustpoint.name == obj.name)
        ).all())
    stored = selection_summary(selection.model_dump(mode="json", exclude_defaults=True))
    batch = Batch(domain_id=scope.domain_id, enrollment_object_id=obj.id, trustpoint_name=obj.name,
                  selection=stored, selected=len(devices), skipped=len(already), requested_by=requested_by,
                  created_at=now)
    session.add(batch)
    session.flush()
    lease_until = now + timedelta(seconds=settings.job_lease_seconds)
    step = [{"at": now.isoformat(), "step": "requested",
             "detail": f"bulk enrollment {batch.id}" + (f" by {requested_by}" if requested_by else "")}]
    job_ids: list[uuid.UUID] = []
    # Chunk by chunk: fifty thousand devices never sit in memory as a hundred thousand row dicts.
    for chunk in chunks([d for d in devices if d[0] not in already], INSERT_CHUNK):
        trustpoints, jobs = [], []
        for device_id, domain_id in chunk:
            tp_id = uuid.uuid4()
            trustpoints.append(dict(
                id=tp_id, device_id=device_id, domain_id=domain_id, enrollment_object_id=obj.id, name=obj.name,
                enrollment_type=obj.enrollment_type, ca_status=Status.IN_PROGRESS.value,
                identity_status=Status.IN_PROGRESS.value, created_at=now, updated_at=now, status_changed_at=now,
            ))
            jobs.append(dict(
                id=uuid.uuid4(), kind=JobKind.ENROLL.value, trustpoint_id=tp_id, device_id=device_id,
                domain_id=domain_id, trustpoint_name=obj.name, state=JobState.QUEUED.value, attempts=0,
                max_attempts=settings.job_max_attempts, lease_expires_at=lease_until, steps=step,
                batch_id=batch.id, reason=JobReason.BULK.value, created_at=now,
            ))
        insert_rows(session, Trustpoint.__table__, trustpoints)
        insert_rows(session, Job.__table__, jobs)
        job_ids += [j["id"] for j in jobs]
    return batch, job_ids


def get_batch(session: Session, *, scope: DomainScope, batch_id: uuid.UUID) -> Batch:
    return batches.get_batch(session, scope=scope, batch_id=batch_id, enrollments=True)


def progress(session: Session, batch: Batch, *, now: datetime) -> BulkEnrollmentPublic:
    """The batch's counts, failures by error code, and an ETA — all from its jobs."""
    return BulkEnrollmentPublic(**batches.progress_fields(session, batch, now=now))


def list_batches(session: Session, *, scope: DomainScope, offset: int, limit: int) -> tuple[list[Batch], int]:
    return batches.list_batches(session, scope=scope, offset=offset, limit=limit, enrollments=True)
