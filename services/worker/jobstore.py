"""The job row: claiming it and recording how it ended, safely under at-least-once delivery.

A worker claims a job with one conditional UPDATE; the attempt number it sets is its
fencing token. Every later write (finish, fail, retry, release) is a conditional UPDATE
on (id, attempts, state running): a worker whose lease expired and whose job was claimed
again by another finds its write refused, and rolls back whatever it meant to commit
with it.

``take_claim`` leaves the commit, which must follow at once (others must see the claim), to
the caller, so it can read what the job is about in the same transaction. The other writes do
not commit either: the caller commits them together with the trustpoint changes they belong to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, or_, update
from sqlmodel import Session

from services.worker.steps import Step
from shared.clock import aware
from shared.enums import JobKind, JobReason, JobState
from shared.logging import get_logger
from shared.models import Job

#: The job table itself: updating it directly skips the ORM's bulk-update machinery, which
#: costs more CPU per job than the rest of the claim (no Job object is in the session anyway).
JOB = Job.__table__

#: The claim and the fenced writes, built once: the values to set and the ``b_`` bound values
#: come with each execution (building the statement anew each time was a tenth of a job's CPU).
CLAIM = update(JOB).where(
    and_(
        JOB.c.id == bindparam("b_id"),
        # The attempt number read before: if another worker claimed in between, it changed.
        JOB.c.attempts == bindparam("b_attempts"),
        or_(
            JOB.c.state == JobState.QUEUED.value,
            and_(
                JOB.c.state == JobState.RUNNING.value,
                or_(JOB.c.lease_expires_at < bindparam("b_now"), JOB.c.lease_expires_at.is_(None)),
            ),
        ),
    )
)
FENCED = update(JOB).where(
    and_(JOB.c.id == bindparam("b_id"), JOB.c.attempts == bindparam("b_attempts"),
         JOB.c.state == JobState.RUNNING.value)
)


def log():
    # A logger per use follows the logging configuration in force: structlog would pin a
    # module-level logger to the configuration of its first use.
    return get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class ClaimedJob:
    """A job this worker holds, and the fencing token (``attempts``) that proves it."""

    id: uuid.UUID
    kind: JobKind
    attempts: int
    max_attempts: int
    trustpoint_id: uuid.UUID | None
    device_id: uuid.UUID
    trustpoint_name: str
    #: Times the job waited for its CA before (see :func:`schedule_retry`).
    ca_waits: int = 0
    #: Why the job exists (a renewal is recorded on the trustpoint as one).
    reason: JobReason = JobReason.OPERATOR
    #: The steps as written by the claim; fenced writes append to these.
    steps: list[Step] = field(default_factory=list)

    @property
    def out_of_attempts(self) -> bool:
        return self.attempts >= self.max_attempts


def take_claim(
    session: Session, job_id: uuid.UUID, *, now: datetime, lease_seconds: float, holder: str = ""
) -> ClaimedJob | None:
    """Claim a queued job, or a running one whose holder's lease ran out (not committed: the
    caller commits at once, since others must see the claim).

    ``None`` when there is nothing to do: the job is unknown, already finished, held by a
    live worker, or another worker claimed it a moment earlier. The message is then
    acknowledged and dropped; the reason is logged.
    """
    plan = _plan_claim(session, job_id, now=now, lease_seconds=lease_seconds, holder=holder)
    if plan is None:
        return None
    params, claimed = plan
    if session.execute(CLAIM, params).rowcount != 1:  # nothing written: the transaction may go on
        log().info("job claimed by another worker first; duplicate message dropped", job_id=str(job_id))
        return None
    return claimed


def take_claims(
    session: Session, job_ids: list[uuid.UUID], *, now: datetime, lease_seconds: float, holder: str = ""
) -> list[ClaimedJob]:
    """:func:`take_claim` for the jobs of a batch, with one statement executed for all of them (not
    committed). Should another worker have claimed one in between (the statement changed fewer rows
    than it was given), the transaction is rolled back and each job is claimed on its own."""
    plans = [plan for job_id in job_ids
             if (plan := _plan_claim(session, job_id, now=now, lease_seconds=lease_seconds, holder=holder))]
    if len(plans) > 1:
        if session.execute(CLAIM, [params for params, _ in plans]).rowcount == len(plans):
            return [claimed for _, claimed in plans]
        session.rollback()
        log().info("another worker claimed some of a batch's jobs first; claiming them one by one")
    return [claimed for job_id in job_ids
            if (claimed := take_claim(session, job_id, now=now, lease_seconds=lease_seconds, holder=holder))]


def _plan_claim(
    session: Session, job_id: uuid.UUID, *, now: datetime, lease_seconds: float, holder: str
) -> tuple[dict[str, Any], ClaimedJob] | None:
    """The claim's statement values and the job as claimed, or None (logged) when it may not be claimed."""
    job = session.get(Job, job_id)
    if job is None:
        log().warning("job not found; message dropped", job_id=str(job_id))
        return None
    lease = aware(job.lease_expires_at)
    if JobState(job.state).finished:
        log().info("job already finished; duplicate message dropped", job_id=str(job_id), state=job.state)
        return None
    if job.state == JobState.RUNNING and lease is not None and lease >= now:
        log().info("job held by another worker; duplicate message dropped", job_id=str(job_id),
                 attempt=job.attempts, lease_expires_at=lease.isoformat())
        return None

    attempts = job.attempts + 1
    taking_over = job.state == JobState.RUNNING
    detail = f"attempt {attempts} of {job.max_attempts}"
    if taking_over:
        detail += f", taken over after attempt {job.attempts}'s lease expired"
    if holder:
        detail += f", by {holder}"
    steps = [*job.steps, {"at": now.isoformat(), "step": "claimed", "detail": detail}]
    params = {
        "b_id": job_id, "b_attempts": job.attempts, "b_now": now,
        "state": JobState.RUNNING.value, "attempts": attempts,
        "lease_expires_at": now + timedelta(seconds=lease_seconds), "started_at": job.started_at or now,
        "steps": steps,
    }
    return params, ClaimedJob(
        id=job.id, kind=JobKind(job.kind), attempts=attempts, max_attempts=job.max_attempts,
        trustpoint_id=job.trustpoint_id, device_id=job.device_id, trustpoint_name=job.trustpoint_name,
        steps=steps, ca_waits=job.ca_waits, reason=JobReason(job.reason),
    )


def _fenced(session: Session, claimed: ClaimedJob, **values: Any) -> bool:
    """Update the job only if this worker still holds it under its fencing token."""
    result = session.execute(FENCED, {"b_id": claimed.id, "b_attempts": claimed.attempts, **values})
    if result.rowcount != 1:
        log().warning("job no longer held by this worker; its result is discarded",
                    job_id=str(claimed.id), attempt=claimed.attempts)
        return False
    return True


def finish_job(session: Session, claimed: ClaimedJob, *, now: datetime, steps: list[Step]) -> bool:
    """Mark the job succeeded (not committed). False: another holder has it; roll back."""
    return _fenced(
        session, claimed, state=JobState.SUCCEEDED.value, finished_at=now, lease_expires_at=None,
        next_attempt_at=None, error_code=None, error_message=None, steps=[*claimed.steps, *steps],
    )


def finish_jobs(session: Session, finished: list[tuple[ClaimedJob, list[Step]]], *, now: datetime) -> list[bool]:
    """:func:`finish_job` for several jobs (with the steps each took), one statement executed for all
    (not committed); for each, whether this worker still held it. When one was lost (the statement
    changed fewer rows than it was given), the transaction is rolled back and each is fenced on its
    own: call this first in the transaction."""
    def values(claimed: ClaimedJob, steps: list[Step]) -> dict[str, Any]:
        return {"b_id": claimed.id, "b_attempts": claimed.attempts, "state": JobState.SUCCEEDED.value,
                "finished_at": now, "lease_expires_at": None, "next_attempt_at": None, "error_code": None,
                "error_message": None, "steps": [*claimed.steps, *steps]}

    if len(finished) > 1:
        if session.execute(FENCED, [values(c, steps) for c, steps in finished]).rowcount == len(finished):
            return [True] * len(finished)
        session.rollback()
    return [finish_job(session, claimed, now=now, steps=steps) for claimed, steps in finished]


def fail_job(
    session: Session, claimed: ClaimedJob, *, now: datetime, code: str, message: str, steps: list[Step]
) -> bool:
    """Mark the job failed for good (not committed). False: another holder has it; roll back."""
    return _fenced(
        session, claimed, state=JobState.FAILED.value, finished_at=now, lease_expires_at=None,
        next_attempt_at=None, error_code=code, error_message=message[:2048], steps=[*claimed.steps, *steps],
    )


def schedule_retry(
    session: Session,
    claimed: ClaimedJob,
    *,
    now: datetime,
    delay_ms: int,
    lease_seconds: float,
    code: str,
    message: str,
    steps: list[Step],
    waiting_for_ca: bool = False,
) -> bool:
    """Put the job back in the queue state until its retry is due (not committed).

    The lease is pushed past the retry time so the reconciler does not re-publish the job
    while its delayed message is still on its way.

    ``waiting_for_ca``: the CA was at its limits or down, no fault of the job's, so the attempt
    this claim took is given back and the wait counted in ``ca_waits``. Safe for fencing: the
    attempt number goes back to what it was before this claim while the job is queued, and any
    claim raises it again, so a stale holder of that number never finds the job running under it.
    """
    due = now + timedelta(milliseconds=delay_ms)
    given_back = {"attempts": claimed.attempts - 1, "ca_waits": claimed.ca_waits + 1} if waiting_for_ca else {}
    return _fenced(
        session, claimed, state=JobState.QUEUED.value, next_attempt_at=due,
        lease_expires_at=due + timedelta(seconds=lease_seconds),
        error_code=code, error_message=message[:2048], steps=[*claimed.steps, *steps], **given_back,
    )


def release_job(
    session: Session,
    claimed: ClaimedJob,
    *,
    now: datetime,
    lease_seconds: float,
    reason: str,
    steps: list[Step],
) -> bool:
    """Give the job back (not committed) after an unexpected error, so a redelivery can claim it.

    The lease still runs: if no redelivery comes, the reconciler re-publishes the job when it ends.
    """
    entry = {"at": now.isoformat(), "step": "released", "detail": reason}
    return _fenced(
        session, claimed, state=JobState.QUEUED.value,
        lease_expires_at=now + timedelta(seconds=lease_seconds), steps=[*claimed.steps, *steps, entry],
    )


def hand_back(
    session: Session, claimed: ClaimedJob, *, now: datetime, lease_seconds: float, reason: str
) -> bool:
    """Give back a job claimed but never started (not committed), with the attempt the claim took:
    a batch that ran out of time publishes it again. Safe for fencing for the reason given under
    :func:`schedule_retry`'s ``waiting_for_ca``."""
    entry = {"at": now.isoformat(), "step": "handed_back", "detail": reason}
    return _fenced(
        session, claimed, state=JobState.QUEUED.value, attempts=claimed.attempts - 1,
        lease_expires_at=now + timedelta(seconds=lease_seconds), steps=[*claimed.steps, entry],
    )
