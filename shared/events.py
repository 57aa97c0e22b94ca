"""Events the controller publishes for the workers. They carry ids only, never secrets:
the worker loads everything else from the database."""

from __future__ import annotations

import uuid

import dramatiq
from dramatiq import Message

from shared.enums import JobKind

#: Single-device operations. Bulk enrollments get their own queue so an operator's
#: single action is never stuck behind ten thousand queued jobs.
JOBS_QUEUE = "certfleet-jobs"
BULK_QUEUE = "certfleet-bulk"

ACTOR_FOR_KIND: dict[JobKind, str] = {
    JobKind.ENROLL: "enroll_trustpoint",
    JobKind.RE_ENROLL: "re_enroll_trustpoint",
    JobKind.REFRESH: "refresh_trustpoint",
    JobKind.DELETE: "delete_trustpoint",
    JobKind.INSTALL_IDENTITY: "install_identity_certificate",
    JobKind.BUNDLE_UPDATE: "push_ca_bundle",
    JobKind.REGENERATE_KEYRING: "regenerate_security_keyring",
}

#: A batch of jobs of any kinds, a list of job ids (see :func:`batch_message`): what bulk actions
#: publish, so that a worker claims and records many jobs per database transaction.
BATCH_ACTOR = "run_jobs"
#: Most jobs in one batch message. A batch's claim and its commit cost about the same whatever
#: its size (a few milliseconds of CPU in the worker and the database), so larger batches cost
#: less per job; toward the end of an action they shrink (:data:`TAIL_MESSAGES`).
MAX_BATCH = 40
#: Fewer jobs per message when a batch is small: at least this many messages, so a small bulk
#: action still keeps every worker thread of a large deployment busy.
MIN_MESSAGES = 64
#: The last batches of an action shrink so that its last jobs are spread over about this many
#: messages, smaller and smaller: the threads finish the action together, instead of a few running
#: long last batches while the others wait with nothing to do.
TAIL_MESSAGES = 16

#: The health check of a batch of devices (their default keyrings): no job row, a message of
#: device ids on the bulk queue (see :func:`health_message`).
HEALTH_ACTOR = "check_device_health"


def job_message(kind: JobKind | str, job_id: uuid.UUID, *, queue: str = JOBS_QUEUE) -> Message:
    return Message(
        queue_name=queue,
        actor_name=ACTOR_FOR_KIND[JobKind(kind)],
        args=(str(job_id),),
        kwargs={},
        options={},
    )


def batch_message(job_ids: list[uuid.UUID], *, queue: str = BULK_QUEUE) -> Message:
    """The jobs with these ids, run one after the other by one worker thread (their kinds are
    read from their rows, as a single job's is)."""
    return Message(queue_name=queue, actor_name=BATCH_ACTOR, args=([str(job_id) for job_id in job_ids],),
                   kwargs={}, options={})


def batch_size(jobs: int, remaining: int | None = None) -> int:
    """Jobs in the next batch message of a bulk action of ``jobs`` jobs, ``remaining`` of them
    (all, when not given) not yet in a message (see :data:`MAX_BATCH`, :data:`MIN_MESSAGES`,
    :data:`TAIL_MESSAGES`)."""
    left = jobs if remaining is None else remaining
    return max(1, min(MAX_BATCH, jobs // MIN_MESSAGES, left // TAIL_MESSAGES))


def batch_sizes(jobs: int) -> list[int]:
    """The sizes of the batch messages a bulk action of ``jobs`` jobs goes out in, in order."""
    sizes, left = [], jobs
    while left > 0:
        sizes.append(batch_size(jobs, left))
        left -= sizes[-1]
    return sizes


def publish_job(
    broker: dramatiq.Broker,
    kind: JobKind | str,
    job_id: uuid.UUID,
    *,
    queue: str = JOBS_QUEUE,
    delay_ms: int | None = None,
) -> None:
    from shared.metrics import EVENTS_PUBLISHED

    if queue not in broker.get_declared_queues():
        broker.declare_queue(queue)
    message = job_message(kind, job_id, queue=queue)
    broker.enqueue(message, delay=delay_ms)
    EVENTS_PUBLISHED.labels(actor=message.actor_name).inc()


def health_message(device_ids: list[uuid.UUID], *, max_age_ms: int | None = None) -> Message:
    """A health check of these devices: their ids, nothing else. ``max_age_ms``: a message that
    waited longer is dropped by the worker (the next health pass checks the devices again)."""
    return Message(
        queue_name=BULK_QUEUE,
        actor_name=HEALTH_ACTOR,
        args=([str(device_id) for device_id in device_ids],),
        kwargs={},
        options={} if max_age_ms is None else {"max_age": max_age_ms},
    )
