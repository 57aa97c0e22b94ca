"""Jobs: one unit of work on one trustpoint, written with the intent and published after.

The job row is committed in the same transaction as the change it carries out; only then
is its id published. If publishing fails (Redis down), the request still succeeds: the job
is stored with a lease, and the reconciler re-publishes it when the lease runs out.

Past creation, the controller never changes a job's state: workers own that.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import dramatiq
from sqlalchemy import func
from sqlmodel import Session, select

from services.controller.rules.scope import DomainScope
from shared.enums import JobKind, JobReason, JobState
from shared.errors import ConflictError, NotFoundError
from shared.events import publish_job
from shared.logging import get_logger
from shared.models import Job, Trustpoint
from shared.settings import Settings

log = get_logger(__name__)

UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


class JobInProgress(ConflictError):
    code = "job_in_progress"

    def __init__(self, job_id: uuid.UUID, *, what: str) -> None:
        super().__init__(
            f"job {job_id} on {what} is not finished yet; wait for it (GET its job) and try again"
        )
        #: Extra problem members: clients can follow the job without parsing the message.
        self.extensions = {"job_id": str(job_id)}


def ensure_no_unfinished_job(
    session: Session, *, what: str, trustpoint_id: uuid.UUID | None = None, device_id: uuid.UUID | None = None
) -> None:
    query = select(Job.id).where(Job.state.in_(UNFINISHED))
    if trustpoint_id is not None:
        query = query.where(Job.trustpoint_id == trustpoint_id)
    if device_id is not None:
        query = query.where(Job.device_id == device_id)
    job_id = session.exec(query.limit(1)).first()
    if job_id is not None:
        raise JobInProgress(job_id, what=what)


def new_job(
    session: Session, *, kind: JobKind, trustpoint: Trustpoint, settings: Settings, now: datetime,
    requested_by: str = "",
) -> Job:
    """Add a queued job for ``trustpoint`` to the session (the caller commits, then publishes)."""
    detail = f"{JobKind(kind).value} requested" + (f" by {requested_by}" if requested_by else "")
    job = Job(
        kind=JobKind(kind).value,
        trustpoint_id=trustpoint.id,
        device_id=trustpoint.device_id,
        domain_id=trustpoint.domain_id,
        trustpoint_name=trustpoint.name,
        state=JobState.QUEUED.value,
        max_attempts=settings.job_max_attempts,
        # If the message is lost before a worker claims the job, the reconciler re-publishes it then.
        lease_expires_at=now + timedelta(seconds=settings.job_lease_seconds),
        steps=[{"at": now.isoformat(), "step": "requested", "detail": detail}],
        created_at=now,
    )
    session.add(job)
    return job


def publish(broker: dramatiq.Broker, job: Job) -> bool:
    """Publish a committed job's id; on failure log and leave it to the reconciler."""
    try:
        publish_job(broker, job.kind, job.id)
    except Exception as exc:  # the broker's errors vary by backend; the stored job is what counts
        log.warning("job stored but not published; the reconciler will re-publish it",
                    job_id=str(job.id), kind=job.kind, error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def get_job(session: Session, *, scope: DomainScope, job_id: uuid.UUID) -> Job:
    job = session.get(Job, job_id)
    if job is None or not scope.sees(job.domain_id):
        raise NotFoundError(f"job {job_id} not found in this domain")
    return job


def list_jobs(
    session: Session, *, scope: DomainScope, offset: int, limit: int, state: JobState | None = None,
    kind: JobKind | None = None, device_id: uuid.UUID | None = None, reason: JobReason | None = None,
) -> tuple[list[Job], int]:
    conditions = [] if scope.is_root else [Job.domain_id.in_(scope.subtree)]
    if state is not None:
        conditions.append(Job.state == JobState(state).value)
    if kind is not None:
        conditions.append(Job.kind == JobKind(kind).value)
    if device_id is not None:
        conditions.append(Job.device_id == device_id)
    if reason is not None:
        conditions.append(Job.reason == JobReason(reason).value)
    total = session.exec(select(func.count()).select_from(Job).where(*conditions)).one()
    rows = session.exec(
        select(Job).where(*conditions).order_by(Job.created_at.desc(), Job.id).offset(offset).limit(limit)
    ).all()
    return list(rows), total
