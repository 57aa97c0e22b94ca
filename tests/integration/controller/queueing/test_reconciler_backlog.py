"""The reconciler and long queues: a bulk enrollment's jobs wait in their queue far longer than
a lease, and must not be published again for it; jobs whose message was lost still are."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from services.controller.queueing.publishing import publish_jobs
from services.controller.queueing.queue_head import oldest_waiting
from shared.broker import make_broker
from shared.events import BULK_QUEUE, JOBS_QUEUE
from shared.settings import Settings
from tests.support.jobs import LEASE, T0, add_jobs, drain, reconcile

REDIS_URL = "redis://127.0.0.1:6379/5"


def test_jobs_still_waiting_behind_the_head_of_their_queue_are_left_alone(sqlite_engine, stub_broker):
    # Published at T0 - 90 s: messages lost since (their lease ended at T0 - 30 s).
    lost = add_jobs(sqlite_engine, 3, lease_expires_at=T0 - timedelta(seconds=30), batch_id=uuid.uuid4())
    # Published at T0 - 40 s, the oldest message still waiting in the bulk queue, and the jobs behind it.
    waiting = add_jobs(sqlite_engine, 4, lease_expires_at=T0 + timedelta(seconds=20), batch_id=uuid.uuid4())
    publish_jobs(stub_broker, [("enroll", job_id, BULK_QUEUE) for job_id in waiting],
                 published_at=T0 - timedelta(seconds=LEASE - 20))
    queued_behind = drain(stub_broker, BULK_QUEUE)
    stub_broker.enqueue(queued_behind[0])  # the head stays; the others were consumed meanwhile

    later = T0 + timedelta(seconds=100)  # every lease has run out
    assert reconcile(sqlite_engine, stub_broker, later) == 3
    republished = drain(stub_broker, BULK_QUEUE)
    assert sorted(m.args[0] for m in republished[1:]) == sorted(map(str, lost))

    # Once the queue is empty nothing can be waiting any more: the rest is published again.
    assert reconcile(sqlite_engine, stub_broker, later + timedelta(seconds=1)) == 4
    assert sorted(m.args[0] for m in drain(stub_broker, BULK_QUEUE)) == sorted(map(str, waiting))


def test_a_backlog_on_one_queue_does_not_hide_lost_jobs_of_the_other(sqlite_engine, stub_broker):
    single = add_jobs(sqlite_engine, 2, lease_expires_at=T0)
    bulk = add_jobs(sqlite_engine, 2, lease_expires_at=T0, batch_id=uuid.uuid4())
    publish_jobs(stub_broker, [("enroll", job_id, BULK_QUEUE) for job_id in bulk],
                 published_at=T0 - timedelta(seconds=LEASE))
    assert reconcile(sqlite_engine, stub_broker, T0 + timedelta(seconds=1)) == 2
    assert sorted(m.args[0] for m in drain(stub_broker, JOBS_QUEUE)) == sorted(map(str, single))


@pytest.mark.redis
def test_the_head_of_a_redis_queue_says_when_it_was_published():
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    broker = make_broker(Settings(broker_url=REDIS_URL))
    try:
        assert oldest_waiting(broker, BULK_QUEUE) is None
        ids = [uuid.uuid4() for _ in range(3)]
        assert publish_jobs(broker, [("enroll", i, BULK_QUEUE) for i in ids], published_at=T0) == 3
        publish_jobs(broker, [("enroll", uuid.uuid4(), BULK_QUEUE)], published_at=T0 + timedelta(seconds=9))
        assert oldest_waiting(broker, BULK_QUEUE) == T0
        assert oldest_waiting(broker, JOBS_QUEUE) is None
    finally:
        broker.close()
        client.flushdb()
        client.close()


def test_a_broker_failing_part_way_counts_exactly_what_went_out():
    class RefusingTheThird(StubBroker):
        """Dramatiq's in-process broker whose connection breaks at the third message."""

        enqueued = 0

        def enqueue(self, message, *, delay=None):
            self.enqueued += 1
            if self.enqueued == 3:
                raise ConnectionError("broker went away")
            return super().enqueue(message, delay=delay)

    broker = RefusingTheThird()
    ids = [uuid.uuid4() for _ in range(5)]
    # Two went out before the failure: counted, so the reconciler gives back only the other three.
    assert publish_jobs(broker, [("enroll", i, BULK_QUEUE) for i in ids], published_at=T0) == 2
    assert [m.args[0] for m in drain(broker, BULK_QUEUE)] == [str(i) for i in ids[:2]]
    broker.close()
