"""Publishing many jobs at once: a few Redis round trips per ten thousand messages.

Dramatiq's ``RedisBroker.enqueue`` runs its dispatch script once per message, a round trip
each: ten thousand jobs took almost two seconds. What that script does for an enqueue is two
writes, the message stored in the hash ``<namespace>:<queue>.msgs`` under a fresh id and the
id pushed onto the list ``<namespace>:<queue>``. :func:`publish_jobs` does the same writes for
a whole chunk, one HSET and one RPUSH inside MULTI/EXEC: a worker never pops an id whose
message is not stored yet, and a chunk is published entirely or not at all. Other brokers
(the in-process one) get one ``enqueue`` per message.

Jobs for the bulk queue go out in batches, a ``run_jobs`` message naming up to
:data:`shared.events.MAX_BATCH` of them, so that a worker claims and records them a batch per
database transaction (:mod:`services.worker.batch`).

Whatever does not get published is not lost: the jobs are in the database with a lease, and
the reconciler re-publishes them when it runs out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import dramatiq
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from shared.enums import JobKind
from shared.events import BULK_QUEUE, batch_message, batch_size, job_message
from shared.logging import get_logger
from shared.metrics import EVENTS_PUBLISHED

log = get_logger(__name__)

#: Messages per MULTI/EXEC: large enough to amortise the round trip, small enough that one
#: transaction never stalls Redis for other clients.
CHUNK = 2000

#: (kind, job id, queue) of one job to publish.
JobRef = tuple[JobKind | str, uuid.UUID, str]


def publish_jobs(
    broker: dramatiq.Broker, jobs: Sequence[JobRef], *, published_at: datetime | None = None
) -> int:
    """Publish committed jobs, in order; return how many went out.

    ``published_at``: the time the jobs' leases were counted from, stamped on the messages so
    the reconciler can tell a message still waiting in its queue from a lost one
    (:mod:`.queue_head`). Stops at the first broker error (logged), leaving the rest to the
    reconciler.
    """
    stamp = {} if published_at is None else {"message_timestamp": int(published_at.timestamp() * 1000)}
    for queue in {queue for _, _, queue in jobs}:
        if queue not in broker.get_declared_queues():
            broker.declare_queue(queue)
    units = message_units(jobs)
    sent = 0
    try:
        for start in range(0, len(units), CHUNK):
            # Built chunk by chunk: fifty thousand messages never sit in memory at once.
            chunk = [(len(unit), _message(unit).copy(**stamp)) for unit in units[start:start + CHUNK]]
            if isinstance(broker, RedisBroker):
                _enqueue_on_redis(broker, [message for _, message in chunk])  # the whole chunk or none of it
                sent += sum(count for count, _ in chunk)
                for actor, count in _count_by_actor([message for _, message in chunk]).items():
                    EVENTS_PUBLISHED.labels(actor=actor).inc(count)
                continue
            for count, message in chunk:  # one at a time: each counted, should a later one fail
                broker.enqueue(message)
                sent += count
                EVENTS_PUBLISHED.labels(actor=message.actor_name).inc()
    except Exception as exc:  # the broker's errors vary by backend; the stored jobs are what counts
        log.warning("jobs stored but not all published; the reconciler will re-publish the rest",
                    published=sent, unpublished=len(jobs) - sent, error=f"{type(exc).__name__}: {exc}")
    return sent


def message_units(jobs: Sequence[JobRef]) -> list[list[JobRef]]:
    """The jobs as messages go out, in order: on the bulk queue, batches of
    :func:`~shared.events.batch_size` jobs, smaller toward the end (one ``run_jobs`` message each,
    see :mod:`services.worker.batch`); on any other queue, one job a message."""
    total = remaining = sum(1 for _, _, queue in jobs if queue == BULK_QUEUE)
    units: list[list[JobRef]] = []
    size = 0  # of the bulk batch being filled
    for job in jobs:
        last = units[-1] if units else None
        if job[2] != BULK_QUEUE:
            units.append([job])
            continue
        if last is None or last[0][2] != BULK_QUEUE or len(last) >= size:
            size = batch_size(total, remaining)
            units.append([job])
        else:
            last.append(job)
        remaining -= 1
    return units


def _message(unit: list[JobRef]) -> Message:
    if len(unit) == 1:
        kind, job_id, queue = unit[0]
        return job_message(kind, job_id, queue=queue)
    return batch_message([job_id for _, job_id, _ in unit], queue=unit[0][2])


def _enqueue_on_redis(broker: RedisBroker, messages: Sequence[Message]) -> None:
    """What ``broker.enqueue`` does for each message, as one transaction per queue."""
    by_queue: dict[str, dict[str, bytes]] = {}
    stamped = []
    for message in messages:
        # A fresh id per enqueue, as dramatiq does: a message may be published more than once.
        message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
        broker.emit_before("enqueue", message, None)
        by_queue.setdefault(message.queue_name, {})[message.options["redis_message_id"]] = message.encode()
        stamped.append(message)
    with broker.client.pipeline(transaction=True) as pipe:
        for queue, encoded in by_queue.items():
            waiting, messages_by_id = redis_queue_keys(broker, queue)
            pipe.hset(messages_by_id, mapping=encoded)
            pipe.rpush(waiting, *encoded)
        pipe.execute()
    for message in stamped:
        broker.emit_after("enqueue", message, None)


def redis_queue_keys(broker: RedisBroker, queue: str) -> tuple[str, str]:
    """Where dramatiq's Redis broker keeps a queue: the list of message ids, waiting in order,
    and the hash of their encoded messages (dramatiq's own layout, which both the publishing
    here and :mod:`.queue_head` rely on)."""
    key = f"{broker.namespace}:{queue}"
    return key, f"{key}.msgs"


def _count_by_actor(messages: Sequence[Message]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in messages:
        counts[message.actor_name] = counts.get(message.actor_name, 0) + 1
    return counts
