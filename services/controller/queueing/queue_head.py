"""How long the oldest message of a queue has been waiting: what tells the reconciler a queued
job's message is still on its way rather than lost.

A queue hands out messages in order. So when the message at the head of a queue was
published at T, every job published to that queue after T still has its message waiting
behind it, however long ago its lease ran out (ten thousand jobs of a bulk enrollment wait
for minutes); only jobs published before T can have lost theirs (a Redis flush, a worker
killed with prefetched messages, a publish that failed). Publishers stamp messages with the
time they record in the job's lease (see :func:`services.controller.queueing.publishing.publish_jobs`).

Redis: the head is ``LINDEX <namespace>:<queue> 0``, its message in ``<namespace>:<queue>.msgs``
(where :mod:`.publishing` writes them). The in-process broker: the first item of its queue.
``None`` means the queue is empty, or the broker cannot tell: every expired job then counts.
"""

from __future__ import annotations

import queue as stdlib_queue
from datetime import UTC, datetime

import dramatiq
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from services.controller.queueing.publishing import redis_queue_keys


def oldest_waiting(broker: dramatiq.Broker, queue_name: str) -> datetime | None:
    """When the message at the head of ``queue_name`` was published; None if empty or unknown."""
    try:
        encoded = _head(broker, queue_name)
        if encoded is None:
            return None
        return datetime.fromtimestamp(Message.decode(encoded).message_timestamp / 1000, UTC)
    except Exception:  # an unreadable head proves nothing: treat the queue as unknown
        return None


def _head(broker: dramatiq.Broker, queue_name: str) -> bytes | None:
    if isinstance(broker, RedisBroker):
        waiting, messages_by_id = redis_queue_keys(broker, queue_name)
        message_id = broker.client.lindex(waiting, 0)
        return None if message_id is None else broker.client.hget(messages_by_id, message_id)
    if isinstance(broker, StubBroker):
        waiting: stdlib_queue.Queue | None = broker.queues.get(queue_name)
        if waiting is None:
            return None
        with waiting.mutex:
            return waiting.queue[0] if waiting.queue else None
    return None
