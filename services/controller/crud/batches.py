"""What every bulk operation shares: its batch, found and listed by kind (enrollments or
trustpoint actions), and its progress (counts, failures by error code, ETA), all derived
from its jobs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func
from sqlmodel import Session, select

from services.controller.api.schemas.bulk_enrollments import FailureGroup, selection_summary
from services.controller.rules.scope import DomainScope
from services.controller.short_cache import ShortCache
from shared.enums import JobKind, JobState
from shared.errors import NotFoundError
from shared.models import Batch, Job

T = TypeVar("T")

#: Batch.action of a bulk enrollment; trustpoint actions are named by their JobKind value.
ENROLL = "enroll"
#: Rows per INSERT statement (and ids per IN list): large enough to be fast, small enough for any driver.
INSERT_CHUNK = 1000


def chunks(items: Sequence[T], size: int = INSERT_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


#: Batch.action of a CA-bundle push to devices: neither an enrollment nor a trustpoint action.
BUNDLE_UPDATE = JobKind.BUNDLE_UPDATE.value
#: Batch.action of a regeneration of devices' default keyrings: about devices too.
REGENERATE_KEYRING = JobKind.REGENERATE_KEYRING.value
#: Batches about devices, not trustpoints: neither bulk enrollments nor bulk actions.
DEVICE_BATCHES = (BUNDLE_UPDATE, REGENERATE_KEYRING)
#: Batch.action of a domain deletion's delete jobs (one per trustpoint of the domain's devices, over
#: several enrollment objects): followed through the domain, not listed as a bulk action.
DELETE_DOMAIN = "delete_domain"
#: Batches that are neither bulk enrollments nor bulk actions.
_OTHER_BATCHES = (*DEVICE_BATCHES, DELETE_DOMAIN)


def _of_kind(enrollments: bool):
    return Batch.action == ENROLL if enrollments else Batch.action.not_in((ENROLL, *_OTHER_BATCHES))


def _is_kind(batch: Batch, enrollments: bool) -> bool:
    return batch.action == ENROLL if enrollments else batch.action not in (ENROLL, *_OTHER_BATCHES)


def _kind_name(enrollments: bool) -> str:
    return "bulk enrollment" if enrollments else "bulk action"


def get_batch(session: Session, *, scope: DomainScope, batch_id: uuid.UUID, enrollments: bool) -> Batch:
    """A bulk enrollment (``enrollments``) or a bulk trustpoint action the domain can see."""
    batch = session.get(Batch, batch_id)
    if batch is None or not scope.sees(batch.domain_id) or not _is_kind(batch, enrollments):
        raise NotFoundError(f"{_kind_name(enrollments)} {batch_id} not found in this domain")
    return batch


def list_batches(
    session: Session, *, scope: DomainScope, offset: int, limit: int, enrollments: bool
) -> tuple[list[Batch], int]:
    conditions = [_of_kind(enrollments)]
    if not scope.is_root:
        conditions.append(Batch.domain_id.in_(scope.subtree))
    total = session.exec(select(func.count()).select_from(Batch).where(*conditions)).one()
    rows = session.exec(select(Batch).where(*conditions).order_by(Batch.created_at.desc())
                        .offset(offset).limit(limit)).all()
    return list(rows), total


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


def progress_fields(session: Session, batch: Batch, *, now: datetime) -> dict[str, Any]:
    """The fields of :class:`BatchProgress` for the batch: its counts, failures by error code,
    and an ETA, all from its jobs."""
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
    return dict(
        id=batch.id, domain_id=batch.domain_id, enrollment_object_id=batch.enrollment_object_id,
        trustpoint_name=batch.trustpoint_name, selection=selection_summary(batch.selection), selected=batch.selected,
        skipped=batch.skipped, total=total, queued=counts.get(JobState.QUEUED.value, 0),
        running=counts.get(JobState.RUNNING.value, 0), succeeded=counts.get(JobState.SUCCEEDED.value, 0),
        failed=counts.get(JobState.FAILED.value, 0), finished=finished, failures=failures,
        created_at=created, elapsed_seconds=round(max(elapsed, 0.0), 2), eta_seconds=eta,
    )
