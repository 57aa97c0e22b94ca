"""How a bulk action's jobs go out as messages: batches on the bulk queue, sized so that even a small
bulk action keeps many worker threads busy; single messages everywhere else."""

from __future__ import annotations

import uuid

from dramatiq.brokers.stub import StubBroker

from services.controller.queueing.publishing import message_units, publish_jobs
from shared.events import (
    BATCH_ACTOR,
    BULK_QUEUE,
    JOBS_QUEUE,
    MAX_BATCH,
    MIN_MESSAGES,
    TAIL_MESSAGES,
    batch_size,
    batch_sizes,
)
from tests.support.jobs import drain


def bulk(count: int, queue: str = BULK_QUEUE):
    return [("enroll", uuid.uuid4(), queue) for _ in range(count)]


def test_ten_thousand_bulk_jobs_go_out_in_full_batches_then_smaller_ones_each_job_once_in_order():
    jobs = bulk(10_000)
    sizes = [len(unit) for unit in message_units(jobs)]
    assert [job for unit in message_units(jobs) for job in unit] == jobs
    assert sizes == batch_sizes(10_000)
    full = sizes.index(next(size for size in sizes if size < MAX_BATCH))
    assert full * MAX_BATCH >= 10_000 - MAX_BATCH * TAIL_MESSAGES  # full batches until the tail
    assert sizes[full:] == sorted(sizes[full:], reverse=True)  # then ever smaller
    assert len(sizes) < 10_000 / (MAX_BATCH * 0.75)


def test_an_actions_last_jobs_are_spread_thin_so_the_threads_finish_it_together():
    """Whoever takes the last messages holds little: no thread runs a long last batch while others idle."""
    for total in (2_000, 10_000, 50_000):
        sizes = batch_sizes(total)
        assert sum(sizes[-TAIL_MESSAGES:]) <= 2 * TAIL_MESSAGES
        assert sizes[-1] == 1
        assert sum(sizes[-4 * TAIL_MESSAGES:]) <= 4 * (4 * TAIL_MESSAGES)  # four jobs a message on average


def test_a_small_bulk_action_is_spread_over_enough_messages_for_every_worker_thread():
    assert batch_size(MIN_MESSAGES * 5) == 5
    assert len(message_units(bulk(MIN_MESSAGES * 5))) >= MIN_MESSAGES
    assert max(len(unit) for unit in message_units(bulk(MIN_MESSAGES * 5))) == 5
    assert [len(unit) for unit in message_units(bulk(100))] == [1] * 100
    assert batch_size(0) == 1 and batch_sizes(0) == []


def test_jobs_of_other_queues_are_never_batched_and_keep_their_place():
    single, jobs = bulk(3, JOBS_QUEUE), bulk(2_000)
    units = message_units([*jobs[:1000], *single, *jobs[1000:]])
    assert [unit for unit in units if unit[0][2] == JOBS_QUEUE] == [[job] for job in single]
    assert [job for unit in units for job in unit] == [*jobs[:1000], *single, *jobs[1000:]]
    assert all(len(unit) <= MAX_BATCH for unit in units)


def test_publishing_counts_jobs_and_a_batch_message_names_its_jobs():
    broker = StubBroker()
    jobs = bulk(MIN_MESSAGES * 3)
    assert publish_jobs(broker, jobs) == len(jobs)
    messages = drain(broker, BULK_QUEUE)
    # Batches, and at the very end single jobs, each as its own actor's message.
    assert {m.actor_name for m in messages} == {BATCH_ACTOR, "enroll_trustpoint"}
    named = [job_id for m in messages for job_id in (m.args[0] if m.actor_name == BATCH_ACTOR else [m.args[0]])]
    assert named == [str(job_id) for _, job_id, _ in jobs]
    broker.close()
