"""Claiming and fencing jobs, on SQLite and PostgreSQL: one holder at a time, and a holder
whose lease ran out cannot overwrite the outcome of the worker that took the job over."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from services.worker import jobstore
from services.worker.runner import load_subject
from shared.clock import aware
from shared.db import init_db, make_engine, session_scope
from shared.models import GLOBAL_DOMAIN_ID, Job
from shared.settings import Settings
from tests.support.pg import fresh_database, postgres_or_skip

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEASE = 60


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(Settings(database_url=f"sqlite:///{tmp_path / 'jobs.db'}"))
        init_db(engine)
        yield engine
        engine.dispose()
        return
    postgres_or_skip()
    with fresh_database() as url:
        engine = make_engine(Settings(database_url=url))
        init_db(engine)
        yield engine
        engine.dispose()


def new_job(engine, **fields) -> uuid.UUID:
    job = Job(kind="enroll", device_id=uuid.uuid4(), domain_id=GLOBAL_DOMAIN_ID, trustpoint_id=uuid.uuid4(),
              trustpoint_name="vpn", max_attempts=3, **fields)
    with session_scope(engine) as session:
        session.add(job)
        session.commit()
    return job.id


def load(engine, job_id) -> Job:
    with Session(engine) as session:
        return session.get(Job, job_id)


def claim(engine, job_id, now=NOW):
    """As the runner claims: take the claim, read the job's subject in the same transaction, commit."""
    with session_scope(engine) as session:
        claimed = jobstore.take_claim(session, job_id, now=now, lease_seconds=LEASE, holder="test")
        if claimed is not None:
            load_subject(session, claimed)
            session.commit()
        return claimed


def test_claim_takes_a_queued_job_and_records_the_attempt(engine):
    job_id = new_job(engine)
    claimed = claim(engine, job_id)
    assert claimed is not None and claimed.attempts == 1
    row = load(engine, job_id)
    assert row.state == "running" and row.attempts == 1
    assert aware(row.lease_expires_at) == NOW + timedelta(seconds=LEASE)
    assert aware(row.started_at) == NOW
    assert row.steps == [{"at": NOW.isoformat(), "step": "claimed", "detail": "attempt 1 of 3, by test"}]


def test_second_claim_while_the_lease_runs_gets_nothing(engine):
    job_id = new_job(engine)
    assert claim(engine, job_id) is not None
    assert claim(engine, job_id, now=NOW + timedelta(seconds=LEASE - 1)) is None
    assert load(engine, job_id).attempts == 1


def test_finished_and_unknown_jobs_are_not_claimed(engine):
    assert claim(engine, new_job(engine, state="succeeded")) is None
    assert claim(engine, new_job(engine, state="failed")) is None
    assert claim(engine, uuid.uuid4()) is None


def test_expired_lease_is_taken_over_and_the_first_holder_is_fenced_out(engine):
    job_id = new_job(engine)
    first = claim(engine, job_id)
    second = claim(engine, job_id, now=NOW + timedelta(seconds=LEASE + 1))
    assert second is not None and second.attempts == 2
    assert "taken over" in second.steps[-1]["detail"]

    with session_scope(engine) as session:
        assert not jobstore.finish_job(session, first, now=NOW, steps=[])
        session.rollback()
    with session_scope(engine) as session:
        assert jobstore.fail_job(session, second, now=NOW, code="boom", message="second holder's outcome",
                                 steps=[])
        session.commit()
    # The late first holder cannot overwrite the outcome either.
    with session_scope(engine) as session:
        assert not jobstore.finish_job(session, first, now=NOW, steps=[])
        assert not jobstore.finish_job(session, second, now=NOW, steps=[])  # no longer running
    row = load(engine, job_id)
    assert (row.state, row.attempts, row.error_code) == ("failed", 2, "boom")
    assert [s["step"] for s in row.steps] == ["claimed", "claimed"]


def test_many_workers_claiming_at_once_one_wins(engine):
    job_id = new_job(engine)
    results, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(claim(engine, job_id))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    assert load(engine, job_id).attempts == 1


def test_retry_requeues_with_its_due_time_and_can_be_claimed_again(engine):
    job_id = new_job(engine)
    first = claim(engine, job_id)
    with session_scope(engine) as session:
        assert jobstore.schedule_retry(
            session, first, now=NOW, delay_ms=1500, lease_seconds=LEASE, code="device_timeout",
            message="device FTD-1 did not answer", steps=[{"at": NOW.isoformat(), "step": "x", "detail": ""}],
        )
        session.commit()
    row = load(engine, job_id)
    assert row.state == "queued" and row.error_code == "device_timeout"
    due = NOW + timedelta(milliseconds=1500)
    assert aware(row.next_attempt_at) == due
    # The reconciler must not re-publish it while the delayed message is on its way.
    assert aware(row.lease_expires_at) > due
    second = claim(engine, job_id, now=due)
    assert second is not None and second.attempts == 2
    assert [s["step"] for s in second.steps] == ["claimed", "x", "claimed"]
    assert aware(load(engine, job_id).started_at) == NOW  # the first start is kept


def test_waiting_for_the_ca_gives_the_attempt_back_and_fences_out_a_stale_holder(engine):
    job_id = new_job(engine)
    stale = claim(engine, job_id)  # attempt 1, then its worker hangs past the lease
    taker = claim(engine, job_id, now=NOW + timedelta(seconds=LEASE + 1))
    assert taker is not None and taker.attempts == 2
    with session_scope(engine) as session:
        assert jobstore.schedule_retry(
            session, taker, now=NOW + timedelta(seconds=LEASE + 2), delay_ms=2000, lease_seconds=LEASE,
            code="ca_busy", message="CA at https://ca:8443 at its rate limit 5/s, waiting for a turn", steps=[],
            waiting_for_ca=True,
        )
        session.commit()
    row = load(engine, job_id)
    # The CA's wait is no fault of the job's: the attempt it took is given back and the wait counted.
    assert (row.state, row.attempts, row.ca_waits, row.error_code) == ("queued", 1, 1, "ca_busy")
    assert aware(row.next_attempt_at) == NOW + timedelta(seconds=LEASE + 4)

    again = claim(engine, job_id, now=NOW + timedelta(seconds=LEASE + 4))
    assert again is not None and (again.attempts, again.ca_waits) == (2, 1)
    # The hung first holder comes back with an outcome: refused, the job is the new holder's.
    with session_scope(engine) as session:
        assert not jobstore.finish_job(session, stale, now=NOW + timedelta(seconds=LEASE + 5), steps=[])
        session.rollback()
    assert load(engine, job_id).state == "running"


def test_released_job_can_be_claimed_again(engine):
    job_id = new_job(engine)
    first = claim(engine, job_id)
    with session_scope(engine) as session:
        assert jobstore.release_job(session, first, now=NOW, lease_seconds=LEASE, reason="unexpected OSError",
                                    steps=[])
        session.commit()
    assert load(engine, job_id).state == "queued"
    assert claim(engine, job_id).attempts == 2
