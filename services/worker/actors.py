"""The Dramatiq actors: one per job kind, each taking a job id and nothing else; ``run_jobs``, taking
the ids of a batch of jobs (what bulk actions publish, see :mod:`.batch`); and the health
check of a batch of devices, taking their ids (``check_device_health``, no job row).

Actors are declared on a broker made at runtime (:func:`shared.broker.make_broker`), not
at import, so tests and the embedded stack can each have their own broker.

Queues: every actor is declared on ``JOBS_QUEUE``. Dramatiq's worker finds the actor for
a message by the message's actor name, whatever queue it came from, so the same actors
also serve ``BULK_QUEUE`` once that queue is declared on the broker (which makes workers
consume it). A retry goes back to the queue its message came from.
"""

from __future__ import annotations

from collections.abc import Callable

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import CurrentMessage

from services.worker.batch import run_jobs as run_batch
from services.worker.context import WorkerContext
from services.worker.health import HealthChecker
from services.worker.log_context import LogContext
from services.worker.runner import run_job
from shared.enums import JobKind
from shared.events import ACTOR_FOR_KIND, BATCH_ACTOR, BULK_QUEUE, HEALTH_ACTOR, JOBS_QUEUE

#: Dramatiq's own retries are for the unexpected (a dropped database connection): the job
#: was released, so a redelivery can claim it. Expected failures are retried by the runner.
ACTOR_OPTIONS = {"max_retries": 3, "min_backoff": 1_000, "max_backoff": 30_000}


def declare_actors(broker: dramatiq.Broker, context: WorkerContext) -> dict[str, dramatiq.Actor]:
    """Declare the job actors (one per job kind) on ``broker``; return them by actor name."""
    _ensure_middleware(broker)
    # A job stuck longer than its lease is handed to another worker anyway: stop this one.
    time_limit_ms = context.settings.job_lease_seconds * 1000
    actors = {}
    for kind, name in ACTOR_FOR_KIND.items():
        actors[name] = dramatiq.actor(
            _handler(broker, context, kind),
            actor_name=name,
            queue_name=JOBS_QUEUE,
            broker=broker,
            time_limit=time_limit_ms,
            **ACTOR_OPTIONS,
        )
    actors[BATCH_ACTOR] = dramatiq.actor(_batch_handler(broker, context), actor_name=BATCH_ACTOR,
                                         queue_name=JOBS_QUEUE, broker=broker, time_limit=time_limit_ms,
                                         **ACTOR_OPTIONS)
    broker.declare_queue(BULK_QUEUE)
    actors[HEALTH_ACTOR] = _health_actor(broker, context)
    return actors


def _health_actor(broker: dramatiq.Broker, context: WorkerContext) -> dramatiq.Actor:
    """``check_device_health(device_ids)`` on the bulk queue: a batch of devices' keyrings read and
    recorded (:mod:`.health`). No job row: a message lost is checked again by the next health pass."""
    checker = HealthChecker(context, broker=broker)

    def check_device_health(device_ids: list[str]) -> None:
        checker.check(device_ids)

    # A batch that outlasts the interval is overtaken by the next pass's messages anyway.
    return dramatiq.actor(check_device_health, actor_name=HEALTH_ACTOR, queue_name=BULK_QUEUE, broker=broker,
                          time_limit=context.settings.health_check_seconds * 1000, **ACTOR_OPTIONS)


def _handler(broker: dramatiq.Broker, context: WorkerContext, kind: JobKind) -> Callable[[str], None]:
    def handle(job_id: str) -> None:
        message = CurrentMessage.get_current_message()
        queue = q_name(message.queue_name) if message is not None else JOBS_QUEUE
        run_job(context, job_id, broker=broker, queue=queue, expected_kind=kind)

    handle.__name__ = handle.__qualname__ = ACTOR_FOR_KIND[kind]
    return handle


def _batch_handler(broker: dramatiq.Broker, context: WorkerContext) -> Callable[[list[str]], None]:
    def run_jobs(job_ids: list[str]) -> None:
        message = CurrentMessage.get_current_message()
        queue = q_name(message.queue_name) if message is not None else BULK_QUEUE
        run_batch(context, job_ids, broker=broker, queue=queue)

    return run_jobs


def _ensure_middleware(broker: dramatiq.Broker) -> None:
    """The middleware the actors rely on, added once whoever made the broker."""
    present = {type(m) for m in broker.middleware}
    for middleware in (CurrentMessage, LogContext):
        if middleware not in present:
            broker.add_middleware(middleware())
