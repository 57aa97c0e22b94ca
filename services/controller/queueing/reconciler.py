"""The reconciler: re-publishes jobs whose message the broker lost.

Every job carries a lease. A queued job whose lease ran out was never claimed: its message
was lost (a Redis flush, a worker killed with it prefetched, a crash before publishing) or is
still waiting behind a long queue, as most of a bulk enrollment's do. It counts as lost only
when it was published before the oldest message still waiting in its queue
(:mod:`.queue_head`), so a queue of fifty thousand is not published again every lease. A
running job whose lease ran out lost its worker (``kill -9``). Either way the job's id is
published again.

Each candidate is taken with a conditional UPDATE, so two reconcilers (or two passes
within a lease) never both re-publish one job:

- a queued job gets its lease pushed forward by ``lease_seconds``;
- a running job keeps its expired lease, because a worker takes a running job over only
  when its lease has run out; the reconciler marks it instead by setting
  ``next_attempt_at`` (the earliest time it may be re-published again).

The state of a job is never changed here: that is the workers' business.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import dramatiq
from sqlalchemy import and_, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from services.controller.queueing.publishing import publish_jobs
from services.controller.queueing.queue_head import oldest_waiting
from shared.clock import utcnow
from shared.enums import JobReason, JobState
from shared.events import BULK_QUEUE, JOBS_QUEUE
from shared.logging import get_logger
from shared.metrics import RECONCILER_REPUBLISHED
from shared.models import Job
from shared.periodic import Periodic

log = get_logger(__name__)

#: Jobs taken per UPDATE: a flush of ten thousand jobs is re-published in ten rounds.
CHUNK = 1000


#: Slack for clocks: a job published this close before the head of its queue may be right
#: behind it (a single job's message is stamped a moment after its lease).
HEAD_MARGIN = timedelta(seconds=2)


def _lost_queued(now: datetime, cutoffs: dict[str, datetime] | None = None):
    """Queued jobs whose lease ended before their queue's cutoff (see :func:`queue_cutoffs`)."""
    cutoffs = cutoffs or {}

    def expired(queue: str):
        cutoff = min(now, cutoffs.get(queue, now))
        return or_(Job.lease_expires_at < cutoff, Job.lease_expires_at.is_(None))

    return and_(Job.state == JobState.QUEUED.value,
                or_(and_(~_on_bulk_queue(), expired(JOBS_QUEUE)),
                    and_(_on_bulk_queue(), expired(BULK_QUEUE))))


#: Jobs nobody asked for one at a time: the scheduler's renewals, a domain policy's keyring regenerations.
_BULK_REASONS = (JobReason.RENEWAL.value, JobReason.POLICY.value)


def _on_bulk_queue():
    """Bulk operations' jobs, the scheduler's renewals and policies' jobs are on the bulk queue, behind
    no operator's single action; the others on the jobs queue."""
    return or_(Job.batch_id.is_not(None), Job.reason.in_(_BULK_REASONS))


def queue_of(*, batch_id: uuid.UUID | None, reason: str) -> str:
    """The queue a job's messages go to (see :func:`_on_bulk_queue`)."""
    return BULK_QUEUE if batch_id is not None or reason in _BULK_REASONS else JOBS_QUEUE


def queue_cutoffs(broker: dramatiq.Broker, *, lease_seconds: float) -> dict[str, datetime]:
    """Per queue, the lease end before which a queued job's message cannot still be waiting:
    the job was published (lease end minus the lease) before the queue's oldest waiting
    message. Queues that are empty, or whose head the broker cannot show, have none."""
    cutoffs = {}
    for queue in (JOBS_QUEUE, BULK_QUEUE):
        head = oldest_waiting(broker, queue)
        if head is not None:
            cutoffs[queue] = head + timedelta(seconds=lease_seconds) - HEAD_MARGIN
    return cutoffs


def _lost_running(now: datetime):
    return and_(Job.state == JobState.RUNNING.value,
                or_(Job.lease_expires_at < now, Job.lease_expires_at.is_(None)),
                or_(Job.next_attempt_at < now, Job.next_attempt_at.is_(None)))


def take_lost_jobs(
    session: Session, *, now: datetime, lease_seconds: float, limit: int,
    cutoffs: dict[str, datetime] | None = None,
) -> tuple[list[tuple[uuid.UUID, str, str]], bool]:
    """Mark up to ``limit`` lost jobs as re-published (not committed). Return (id, kind, queue) of
    those this call won with their queue (another reconciler may win some), and whether more may be waiting.
    ``cutoffs``: see :func:`queue_cutoffs` (none: every queued job past its lease counts)."""
    candidates = session.exec(
        select(Job.id).where(or_(_lost_queued(now, cutoffs), _lost_running(now)))
        .order_by(Job.lease_expires_at).limit(limit)
    ).all()
    if not candidates:
        return [], False
    until = now + timedelta(seconds=lease_seconds)
    taken: list[tuple[uuid.UUID, str, str]] = []
    for condition, values in (
        (_lost_queued(now, cutoffs), {"lease_expires_at": until}),
        (_lost_running(now), {"next_attempt_at": until}),
    ):
        result = session.execute(
            update(Job).where(Job.id.in_(candidates), condition).values(**values)
            .returning(Job.id, Job.kind, Job.batch_id, Job.reason).execution_options(synchronize_session=False)
        )
        taken += [(row[0], row[1], queue_of(batch_id=row[2], reason=row[3])) for row in result]
    return taken, len(candidates) == limit


def _give_back(session: Session, job_ids: list[uuid.UUID], *, now: datetime, until: datetime) -> None:
    """Publishing failed: make these jobs due again at the next pass (only if still as we left them)."""
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.state == JobState.QUEUED.value, Job.lease_expires_at == until)
        .values(lease_expires_at=now).execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.state == JobState.RUNNING.value, Job.next_attempt_at == until)
        .values(next_attempt_at=None).execution_options(synchronize_session=False)
    )
    session.commit()


def reconcile_once(
    session: Session, broker: dramatiq.Broker, *, now: datetime, lease_seconds: float, chunk: int = CHUNK
) -> int:
    """Re-publish every lost job; return how many were published."""
    published = 0
    until = now + timedelta(seconds=lease_seconds)
    # Read once per pass: what this pass publishes becomes the queues' new tail, not their head.
    cutoffs = queue_cutoffs(broker, lease_seconds=lease_seconds)
    while True:
        taken, more = take_lost_jobs(session, now=now, lease_seconds=lease_seconds, limit=chunk, cutoffs=cutoffs)
        session.commit()
        sent = publish_jobs(broker, [(kind, job_id, queue) for job_id, kind, queue in taken], published_at=now)
        published += sent
        if sent < len(taken):  # broker down: retry the rest at the next pass
            _give_back(session, [j for j, _, _ in taken[sent:]], now=now, until=until)
            log.warning("re-publishing stopped: the broker refused", published=published)
            RECONCILER_REPUBLISHED.inc(published)
            return published
        if not more:
            break
    if published:
        RECONCILER_REPUBLISHED.inc(published)
        log.info("re-published lost jobs", count=published)
    return published


class Reconciler(Periodic):
    """Runs :func:`reconcile_once` every ``interval_seconds`` in a daemon thread."""

    thread_name = "certfleet-reconciler"

    def __init__(
        self, engine: Engine, broker: dramatiq.Broker, *, interval_seconds: float, lease_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(every_seconds=interval_seconds)
        self.engine, self.broker = engine, broker
        self.interval_seconds, self.lease_seconds, self.clock = interval_seconds, lease_seconds, clock

    def run_once(self) -> int:
        with Session(self.engine, expire_on_commit=False) as session:
            return reconcile_once(session, self.broker, now=self.clock(), lease_seconds=self.lease_seconds)
