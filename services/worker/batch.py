"""Running a batch of jobs from one message: what a bulk action publishes, a few dozen jobs a message.

A job's database work is mostly the cost of a transaction, not of its rows. So a batch:

1. claims every job of the message and loads what each is about in one transaction (one query
   for all their trustpoints, devices and enrollment objects);
2. runs the jobs one after the other, as :func:`~services.worker.runner.run_job` would, except
   that a success is not committed at once but collected;
3. commits the collected successes in one transaction (:func:`~services.worker.runner.commit_finishes`),
   each still fenced by its own claim. Failures, retries and waits for a CA are committed as they
   happen, job by job, as a single job's are.

Every guarantee of a single job holds per job: a batch's jobs are claimed and fenced one by one, so
a duplicate message or another worker's takeover skips exactly the jobs it concerns; a worker killed
mid-batch leaves its claimed jobs to the reconciler when their leases end.

Time: every job of a batch is claimed at its start, so the batch starts no job that could not end
within the lease (its last start leaves one permit's worth, the longest an exchange may take): jobs
left then are handed back, their attempt returned, and published again one message each. When one
job must wait for its CA, the batch's other jobs for that CA wait with it rather than each asking
the gate in turn; and a permit from an enrollment that went well is given back in the same step
as the next enrollment with that CA asks for its own (:class:`~services.worker.ca_waiting.PermitCarry`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import dramatiq
import structlog

from services.worker import jobstore
from services.worker.ca_gate import ca_endpoint
from services.worker.ca_waiting import CA_TYPES, PermitCarry, permit_lease_ms
from services.worker.context import WorkerContext
from services.worker.jobstore import ClaimedJob
from services.worker.runner import Finish, JobOutcome, Subject, _JobRun, commit_finishes, load_subject, prefetch_many
from shared.db import session_scope
from shared.enums import EnrollmentType, JobKind
from shared.events import BULK_QUEUE, publish_job
from shared.logging import get_logger


def log():
    return get_logger(__name__)


def run_jobs(
    ctx: WorkerContext, job_ids: Sequence[str | uuid.UUID], *, broker: dramatiq.Broker | None = None,
    queue: str = BULK_QUEUE,
) -> list[JobOutcome]:
    """Run the batch once; the outcome of each job (``skipped``: not claimed, or handed back)."""
    ids = _job_ids(job_ids)
    now = ctx.clock()
    with session_scope(ctx.engine) as session:
        held = prefetch_many(session, ids)  # noqa: F841  (the session keeps only weak references)
        taken = jobstore.take_claims(session, ids, now=now, lease_seconds=ctx.settings.job_lease_seconds,
                                     holder=ctx.holder)
        claims = [(claimed, load_subject(session, claimed)) for claimed in taken]
        session.commit()
    taken_ids = {claimed.id for claimed, _ in claims}
    skipped = [JobOutcome(job_id=job_id, result="skipped") for job_id in ids if job_id not in taken_ids]
    return skipped + _Batch(ctx, claims, claimed_at=now, broker=broker, queue=queue).run()


class _Batch:
    def __init__(self, ctx: WorkerContext, claims: list[tuple[ClaimedJob, Subject]], *, claimed_at,
                 broker: dramatiq.Broker | None, queue: str) -> None:
        self.ctx, self.claims, self.broker, self.queue = ctx, claims, broker, queue
        lease = timedelta(seconds=ctx.settings.job_lease_seconds)
        #: After this, a job started could outlast its lease.
        self.last_start = claimed_at + lease - timedelta(milliseconds=permit_lease_ms(ctx.settings))
        self.finishing: list[Finish] = []
        self.permits = PermitCarry(ctx.ca_gate, ctx.settings)

    def run(self) -> list[JobOutcome]:
        try:
            return self._run()
        finally:
            self.permits.flush()

    def _run(self) -> list[JobOutcome]:
        outcomes: list[JobOutcome] = []
        parked: dict[str, object] = {}
        for index, (claimed, subject) in enumerate(self.claims):
            if index > 0 and self.ctx.clock() > self.last_start:
                outcomes += self._hand_back(self.claims[index:])
                break
            run = _JobRun(self.ctx, claimed, subject, broker=self.broker, queue=self.queue,
                          finishing=self.finishing, permits=self.permits)
            endpoint = _ca_endpoint(claimed, subject)
            if endpoint != self.permits.endpoint:
                self.permits.flush()  # no job of this batch holds on to a CA it no longer talks to
            structlog.contextvars.bind_contextvars(job_id=str(claimed.id))
            try:
                if endpoint is not None and endpoint in parked:
                    outcomes.append(run.park(parked[endpoint]))  # type: ignore[arg-type]
                    continue
                outcomes.append(run.execute())
            except BaseException as exc:  # the database gone, the time limit, a bug: as run_job does
                run.release(exc)
                self._give_back(self.claims[index + 1:], exc)
                self._commit_collected()
                raise
            finally:
                structlog.contextvars.unbind_contextvars("job_id")
            if run.parked is not None and endpoint is not None:
                parked[endpoint] = run.parked
        final = self._commit_collected()
        by_id = {outcome.job_id: outcome for outcome in final}
        return [by_id.get(outcome.job_id, outcome) for outcome in outcomes]

    def _commit_collected(self) -> list[JobOutcome]:
        """Commit the successes collected so far; should that fail, each on its own, so one bad
        write costs no other job its result. A job that cannot be committed at all is released."""
        finishes, self.finishing[:] = list(self.finishing), []
        if not finishes:
            return []
        try:
            return commit_finishes(self.ctx, finishes)
        except Exception as group_error:
            log().warning("a batch's successes could not be committed together; committing each on its own",
                          jobs=len(finishes), error=type(group_error).__name__)
        outcomes, first_error = [], None
        for finish in finishes:
            try:
                outcomes += commit_finishes(self.ctx, [finish])
            except Exception as exc:
                finish.run.steps.entries[:0] = finish.steps  # released with the steps it took
                finish.run.release(exc)
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return outcomes

    def _hand_back(self, rest: list[tuple[ClaimedJob, Subject]]) -> list[JobOutcome]:
        """Give back the jobs not started, attempts returned, and publish each again."""
        reason = "the batch it was claimed in ran out of time before starting it; published again"
        given_back = self._give_back(rest, reason)
        if self.broker is not None:
            for claimed in given_back:
                publish_job(self.broker, claimed.kind, claimed.id, queue=self.queue)
        log().info("batch ran out of time; jobs not started were handed back", jobs=len(given_back))
        return [JobOutcome(job_id=claimed.id, result="skipped", kind=claimed.kind) for claimed, _ in rest]

    def _give_back(self, rest: list[tuple[ClaimedJob, Subject]], why: BaseException | str) -> list[ClaimedJob]:
        """Hand back ``rest`` (best effort: when the database is what failed, their leases run out and
        the reconciler publishes them again)."""
        if not rest:
            return []
        reason = why if isinstance(why, str) else f"the batch stopped on an unexpected {type(why).__name__}; " \
                                                    "the job will be tried again"
        given_back = []
        try:
            with session_scope(self.ctx.engine) as session:
                now = self.ctx.clock()
                for claimed, _ in rest:
                    if jobstore.hand_back(session, claimed, now=now, lease_seconds=self.ctx.settings.job_lease_seconds,
                                          reason=reason):
                        given_back.append(claimed)
                session.commit()
        except Exception as exc:
            log().warning("could not hand back a batch's jobs; the reconciler will publish them when their "
                          "leases end", jobs=len(rest), error=type(exc).__name__)
            return []
        return given_back


def _job_ids(job_ids: Sequence[str | uuid.UUID]) -> list[uuid.UUID]:
    ids: dict[uuid.UUID, None] = {}  # in message order, each once
    for job_id in job_ids:
        try:
            parsed = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
        except ValueError:
            log().error("a batch names something that is not a job id; skipped", job_id=str(job_id)[:64])
            continue
        ids[parsed] = None
    return list(ids)


def _ca_endpoint(claimed: ClaimedJob, subject: Subject) -> str | None:
    """The CA endpoint the job's device enrolls with, when the job makes it talk to one."""
    obj = subject.enrollment_object
    if claimed.kind not in (JobKind.ENROLL, JobKind.RE_ENROLL):
        return None
    if obj is None or not obj.enrollment_url or EnrollmentType(obj.enrollment_type) not in CA_TYPES:
        return None
    return ca_endpoint(obj.enrollment_url)
