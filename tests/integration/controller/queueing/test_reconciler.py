"""The reconciler: a job whose message was lost is published again, once per lease, however
many reconcilers run; on SQLite, PostgreSQL, the in-process broker and a real Redis."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
import redis
from fastapi.testclient import TestClient
from sqlmodel import Session

from services.controller.app import create_app
from services.controller.queueing.reconciler import Reconciler
from services.worker.jobstore import take_claim
from shared.broker import make_broker
from shared.events import BULK_QUEUE, JOBS_QUEUE
from shared.metrics import RECONCILER_REPUBLISHED
from shared.models import Job
from shared.settings import Settings
from tests.support.jobs import LEASE, T0, add_jobs, drain, reconcile

REDIS_URL = "redis://127.0.0.1:6379/11"


def load(engine, job_id: uuid.UUID) -> Job:
    with Session(engine) as session:
        return session.get(Job, job_id)


@pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_lost_job_is_published_again_once_per_lease(db_engine, stub_broker):
    [job_id] = add_jobs(db_engine, 1, lease_expires_at=T0)
    before = RECONCILER_REPUBLISHED._value.get()

    assert reconcile(db_engine, stub_broker, T0 + timedelta(seconds=1)) == 1
    assert reconcile(db_engine, stub_broker, T0 + timedelta(seconds=30)) == 0  # still within the new lease
    [message] = drain(stub_broker)
    assert (message.queue_name, message.actor_name, message.args) == (
        JOBS_QUEUE,
        "enroll_trustpoint",
        (str(job_id),),
    )
    assert RECONCILER_REPUBLISHED._value.get() == before + 1
    job = load(db_engine, job_id)
    assert job.state == "queued" and job.lease_expires_at == T0 + timedelta(seconds=1 + LEASE)

    # Still nobody claimed it a lease later: published again.
    assert reconcile(db_engine, stub_broker, T0 + timedelta(seconds=2 + LEASE)) == 1
    assert [m.args for m in drain(stub_broker)] == [(str(job_id),)]


def test_jobs_within_their_lease_or_finished_are_left_alone(sqlite_engine, stub_broker):
    add_jobs(sqlite_engine, 2, lease_expires_at=T0 + timedelta(seconds=10))
    add_jobs(sqlite_engine, 2, state="running", lease_expires_at=T0 + timedelta(seconds=10))
    add_jobs(sqlite_engine, 1, state="succeeded", lease_expires_at=None)
    add_jobs(sqlite_engine, 1, state="failed", lease_expires_at=T0 - timedelta(days=1))
    # A retry the worker scheduled: its delayed message is on its way, its lease covers it.
    add_jobs(
        sqlite_engine,
        1,
        next_attempt_at=T0 + timedelta(seconds=5),
        lease_expires_at=T0 + timedelta(seconds=5 + LEASE),
    )
    assert reconcile(sqlite_engine, stub_broker, T0) == 0
    assert drain(stub_broker) == []


@pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_job_whose_worker_died_is_published_again_and_can_be_taken_over(db_engine, stub_broker):
    [job_id] = add_jobs(db_engine, 1, state="running", attempts=1, lease_expires_at=T0, kind="re_enroll")
    now = T0 + timedelta(seconds=1)
    assert reconcile(db_engine, stub_broker, now) == 1
    assert reconcile(db_engine, stub_broker, now + timedelta(seconds=20)) == 0
    [message] = drain(stub_broker)
    assert message.actor_name == "re_enroll_trustpoint" and message.args == (str(job_id),)
    job = load(db_engine, job_id)
    assert (job.state, job.attempts) == ("running", 1)  # the reconciler never changes a job's state

    # The worker that receives the message takes the job over.
    with Session(db_engine) as session:
        claimed = take_claim(session, job_id, now=now + timedelta(seconds=2), lease_seconds=LEASE)
        session.commit()
    assert claimed is not None and claimed.attempts == 2
    assert reconcile(db_engine, stub_broker, now + timedelta(seconds=LEASE)) == 0


@pytest.mark.postgres
def test_two_reconcilers_never_publish_one_job_twice(pg_engine, stub_broker):
    ids = add_jobs(pg_engine, 3000, lease_expires_at=T0)
    add_jobs(pg_engine, 500, state="running", lease_expires_at=T0)
    now = T0 + timedelta(seconds=1)
    counts: list[int] = []
    start = threading.Barrier(2)

    def run():
        start.wait()
        counts.append(reconcile(pg_engine, stub_broker, now, chunk=250))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job_ids = [m.args[0] for m in drain(stub_broker)]
    assert sum(counts) == len(job_ids) == len(set(job_ids)) == 3500
    assert set(map(str, ids)) <= set(job_ids)


def test_a_flushed_queue_of_ten_thousand_jobs_is_republished_in_one_pass(sqlite_engine, stub_broker):
    ids = add_jobs(sqlite_engine, 10_000, lease_expires_at=T0)
    assert reconcile(sqlite_engine, stub_broker, T0 + timedelta(seconds=1)) == 10_000
    assert sorted(m.args[0] for m in drain(stub_broker)) == sorted(map(str, ids))


def test_a_broker_outage_leaves_the_jobs_for_the_next_pass(sqlite_engine, stub_broker):
    [job_id] = add_jobs(sqlite_engine, 1, lease_expires_at=T0)
    down = make_broker(Settings(broker_url="redis://127.0.0.1:9/11"))  # nothing listens there
    try:
        assert reconcile(sqlite_engine, down, T0 + timedelta(seconds=1)) == 0
    finally:
        down.close()
    assert load(sqlite_engine, job_id).lease_expires_at < T0 + timedelta(seconds=2)
    assert reconcile(sqlite_engine, stub_broker, T0 + timedelta(seconds=2)) == 1
    assert [m.args for m in drain(stub_broker)] == [(str(job_id),)]


# --- on a real Redis -----------------------------------------------------------------------------


@pytest.fixture
def redis_db11():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and Redis is unreachable: {exc}")
        pytest.skip(f"Redis is unreachable: {exc}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.mark.redis
def test_republished_job_lands_in_redis(sqlite_engine, redis_db11):
    [job_id] = add_jobs(sqlite_engine, 1, lease_expires_at=T0)
    broker = make_broker(Settings(broker_url=REDIS_URL))
    try:
        assert reconcile(sqlite_engine, broker, T0 + timedelta(seconds=1)) == 1
    finally:
        broker.close()
    queued = redis_db11.hgetall(f"dramatiq:{JOBS_QUEUE}.msgs")
    assert redis_db11.llen(f"dramatiq:{JOBS_QUEUE}") == len(queued) == 1
    message = dramatiq.Message.decode(next(iter(queued.values())))
    assert (message.actor_name, message.args, message.kwargs) == ("enroll_trustpoint", (str(job_id),), {})


# --- inside the controller ---------------------------------------------------------------------


def test_the_controller_runs_the_reconciler_in_the_background(sqlite_engine, stub_broker):
    settings = Settings(
        database_url=str(sqlite_engine.url), reconcile_interval_seconds=0.05, job_lease_seconds=LEASE
    )
    app = create_app(settings, engine=sqlite_engine, broker=stub_broker, start_reconciler=True)
    reconciler: Reconciler = app.state.reconciler
    with TestClient(app):
        [job_id] = add_jobs(sqlite_engine, 1, lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        deadline = time.monotonic() + 10
        messages: list[dramatiq.Message] = []
        while not messages and time.monotonic() < deadline:
            messages = drain(stub_broker)
            time.sleep(0.02)
        assert [m.args for m in messages] == [(str(job_id),)]
        thread = reconciler._thread
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()  # stopped with the app


def test_a_bulk_enrollment_job_goes_back_to_the_bulk_queue(sqlite_engine, stub_broker):
    single = add_jobs(sqlite_engine, 1)
    bulk = add_jobs(sqlite_engine, 2, batch_id=uuid.uuid4())
    assert reconcile(sqlite_engine, stub_broker, T0 + timedelta(seconds=1)) == 3
    assert [m.args[0] for m in drain(stub_broker)] == [str(j) for j in single]
    assert sorted(m.args[0] for m in drain(stub_broker, BULK_QUEUE)) == sorted(str(j) for j in bulk)
