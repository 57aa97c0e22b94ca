"""Bulk enrollment: install one enrollment object on many devices at once.

Trustpoints and jobs are written with multi-row inserts in one transaction, then the job
ids are published to the bulk queue, so an operator's single-device actions (on the jobs
queue) are never stuck behind ten thousand bulk jobs. Progress is read from the jobs.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, insert
from sqlmodel import Session, select

from services.controller.api.schemas.bulk_enrollments import BulkEnrollmentPublic, DeviceSelection, FailureGroup
from services.controller.crud.enrollment_objects import get_object
from services.controller.rules.scope import DomainScope
from services.controller.short_cache import ShortCache
from shared.enums import EnrollmentType, JobKind, JobState
from shared.errors import ConflictError, NotFoundError, ValidationError
from shared.models import Batch, Device, Job, Trustpoint
from shared.settings import Settings
from shared.states import Status

#: Rows per INSERT statement: large enough to be fast, small enough for any driver.
INSERT_CHUNK = 1000


def like_pattern(glob: str) -> str:
    """A shell-style pattern as a SQL LIKE pattern (escape character '\\')."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def select_devices(session: Session, *, scope: DomainScope, selection: DeviceSelection) -> list[tuple]:
    """(id, domain_id) of the selected devices in the scope's subtree, in name order."""
    query = select(Device.id, Device.domain_id)
    if not scope.is_root:
        query = query.where(Device.domain_id.in_(scope.subtree))
    if selection.device_ids is not None:
        wanted = set(selection.device_ids)
        rows = [r for chunk in _chunks(list(wanted), INSERT_CHUNK)
                for r in session.exec(query.where(Device.id.in_(chunk))).all()]
        missing = wanted - {r[0] for r in rows}
        if missing:
            raise NotFoundError(
                f"{len(missing)} of the selected devices are not in this domain, e.g. {sorted(map(str, missing))[0]}",
                code="devices_not_found",
            )
        return rows
    if selection.name_pattern:
        query = query.where(Device.name.like(like_pattern(selection.name_pattern), escape="\\"))
    if selection.model:
        query = query.where(Device.model == selection.model)
    return list(session.exec(query.order_by(Device.name)).all())


def create_batch(
    session: Session, *, scope: DomainScope, enrollment_object_id: uuid.UUID, selection: DeviceSelection,
    settings: Settings, now: datetime, requested_by: str = "",
) -> tuple[Batch, list[uuid.UUID]]:
    """Write the batch, its trustpoints and jobs (not committed); return the batch and job ids."""
    obj = get_object(session, scope=scope, object_id=enrollment_object_id)
    if obj.enrollment_type == EnrollmentType.PKCS12 and obj.pkcs12_blob is None:
        raise ConflictError(f"enrollment object {obj.name} has no PKCS12 file yet; upload it first",
                            code="pkcs12_file_missing")
    devices = select_devices(session, scope=scope, selection=selection)
    if not devices:
        raise ValidationError("the selection matches no device in this domain", code="empty_selection")
    already = set()
    for chunk in _chunks([d[0] for d in devices], INSERT_CHUNK):
        already.update(session.exec(
            select(Trustpoint.device_id).where(Trustpoint.device_id.in_(chunk), Trustpoint.name == obj.name)
        ).all())
    batch = Batch(domain_id=scope.domain_id, enrollment_object_id=obj.id, trustpoint_name=obj.name,
                  selection=selection.model_dump(mode="json", exclude_none=True), selected=len(devices),
                  skipped=len(already), requested_by=requested_by, created_at=now)
    session.add(batch)
    session.flush()
    lease_until = now + timedelta(seconds=settings.job_lease_seconds)
    step = [{"at": now.isoformat(), "step": "requested",
             "detail": f"bulk enrollment {batch.id}" + (f" by {requested_by}" if requested_by else "")}]
    job_ids: list[uuid.UUID] = []
    # Chunk by chunk: fifty thousand devices never sit in memory as a hundred thousand row dicts.
    for chunk in _chunks([d for d in devices if d[0] not in already], INSERT_CHUNK):
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
                batch_id=batch.id, created_at=now,
            ))
        session.execute(insert(Trustpoint), trustpoints)
        session.execute(insert(Job), jobs)
        job_ids += [j["id"] for j in jobs]
    return batch, job_ids


def get_batch(session: Session, *, scope: DomainScope, batch_id: uuid.UUID) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None or not scope.sees(batch.domain_id):
        raise NotFoundError(f"bulk enrollment {batch_id} not found in this domain")
    return batch


#: A big batch's counts are remembered for a second (see :mod:`..short_cache`).
_AGGREGATES = ShortCache(1.0)
#: From this many jobs on, a batch's counts are worth remembering.
CACHE_FROM_JOBS = 1000


def _aggregate(
    session: Session, batch_id: uuid.UUID
) -> tuple[dict[str, int], list[FailureGroup], datetime | None]:
    """Jobs per state, failures by error code, and when the last job finished."""
    rows = session.exec(
        select(Job.state, func.count(), func.max(Job.finished_at)).where(Job.batch_id == batch_id)
        .group_by(Job.state)
    ).all()
    counts = {state: count for state, count, _ in rows}
    finished_at = [last for _, _, last in rows if last is not None]
    failures = [
        FailureGroup(error_code=code or "unknown", count=count, example_message=message or "")
        for code, count, message in session.exec(
            select(Job.error_code, func.count(), func.max(Job.error_message))
            .where(Job.batch_id == batch_id, Job.state == JobState.FAILED.value)
            .group_by(Job.error_code).order_by(func.count().desc())
        ).all()
    ] if counts.get(JobState.FAILED.value) else []
    return counts, failures, max(finished_at, default=None)


def progress(session: Session, batch: Batch, *, now: datetime) -> BulkEnrollmentPublic:
    """The batch's counts, failures by error code, and an ETA — all from its jobs."""
    counts, failures, last_finished = _AGGREGATES.get(
        (session.get_bind().url, batch.id), lambda: _aggregate(session, batch.id),
        keep=lambda _: batch.selected - batch.skipped >= CACHE_FROM_JOBS,
    )
    total = sum(counts.values())
    done = counts.get(JobState.SUCCEEDED.value, 0) + counts.get(JobState.FAILED.value, 0)
    created = batch.created_at
    finished = done >= total
    elapsed = ((last_finished if finished and last_finished else now) - created).total_seconds()
    eta = None
    if finished:
        eta = 0.0
    elif done:
        eta = round((total - done) * elapsed / done, 1)
    return BulkEnrollmentPublic(
        id=batch.id, domain_id=batch.domain_id, enrollment_object_id=batch.enrollment_object_id,
        trustpoint_name=batch.trustpoint_name, selection=batch.selection, selected=batch.selected,
        skipped=batch.skipped, total=total, queued=counts.get(JobState.QUEUED.value, 0),
        running=counts.get(JobState.RUNNING.value, 0), succeeded=counts.get(JobState.SUCCEEDED.value, 0),
        failed=counts.get(JobState.FAILED.value, 0), finished=finished, failures=failures,
        created_at=created, elapsed_seconds=round(max(elapsed, 0.0), 2), eta_seconds=eta,
    )


def list_batches(session: Session, *, scope: DomainScope, offset: int, limit: int) -> tuple[list[Batch], int]:
    conditions = [] if scope.is_root else [Batch.domain_id.in_(scope.subtree)]
    total = session.exec(select(func.count()).select_from(Batch).where(*conditions)).one()
    rows = session.exec(select(Batch).where(*conditions).order_by(Batch.created_at.desc())
                        .offset(offset).limit(limit)).all()
    return list(rows), total


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]
