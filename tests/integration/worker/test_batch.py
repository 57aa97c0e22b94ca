"""A batch of jobs from one message (what bulk actions publish): each job ends as it would alone, the
batch's successes are committed together, and every per-job guarantee holds inside a batch (duplicates,
takeovers, a CA to wait for, a batch that runs out of time, a write that fails). Real SQLite and
PostgreSQL, the device simulator over HTTP on loopback, the in-process broker, a ManualClock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from dramatiq.common import dq_name
from sqlalchemy import event

from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from services.worker import batch, jobstore, persist
from services.worker.batch import run_jobs
from services.worker.ca_waiting import permit_lease_ms
from shared.db import session_scope
from shared.events import BULK_QUEUE
from shared.models import GLOBAL_DOMAIN_ID, Device, EnrollmentObject, Job, Trustpoint
from tests.integration.worker.test_runner import EST_URL, LEASE, EnrollsWith, World, ca_failing, make_world, step_names
from tests.support.jobs import drain


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    """A healthy fleet; each test uses devices of its own."""
    with start_in_thread(SimConfig(devices=40, seed=7)) as running:
        yield running


@pytest.fixture
def world(db_engine, stub_broker, sim):
    made = make_world(db_engine, stub_broker, sim)
    yield made
    made.ctx.close()


def jobs_for(world: World, serials: list[str], name: str = "vpn", **fields
             ) -> tuple[list[Device], list[Trustpoint], list]:
    """An enroll job for a trustpoint ``name`` on each device, all of one enrollment object."""
    fields = {"enrollment_type": "self_signed", "key_type": "ecdsa", "key_size": 256, **fields}
    obj = world.add(EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name=name, **fields))
    devices = [world.device(serial) for serial in serials]
    trustpoints = [world.add(Trustpoint(device_id=device.id, domain_id=GLOBAL_DOMAIN_ID, enrollment_object_id=obj.id,
                                        name=name, enrollment_type=obj.enrollment_type)) for device in devices]
    return devices, trustpoints, [world.job("enroll", tp) for tp in trustpoints]


def transactions(engine):
    """Count the transactions committed on ``engine`` while the block runs."""
    count = {"commits": 0}

    def committed(_connection):
        count["commits"] += 1

    event.listen(engine, "commit", committed)
    return count, lambda: event.remove(engine, "commit", committed)


@pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)
def test_a_batch_enrolls_every_trustpoint_and_records_them_in_two_transactions(world):
    devices, trustpoints, job_ids = jobs_for(world, [f"FTD-0000{i:02d}" for i in range(1, 9)])
    count, stop = transactions(world.engine)

    outcomes = run_jobs(world.ctx, [str(job_id) for job_id in job_ids], broker=world.broker)
    stop()

    assert sorted((o.job_id, o.result) for o in outcomes) == sorted((j, "succeeded") for j in job_ids)
    assert count["commits"] == 2  # the claims, then the eight outcomes together
    for device, trustpoint, job_id in zip(devices, trustpoints, job_ids, strict=True):
        job = world.row(Job, job_id)
        assert (job.state, job.attempts) == ("succeeded", 1)
        assert step_names(job) == ["claimed", "configured", "enroll", "installed"]
        row = world.row(Trustpoint, trustpoint.id)
        assert (row.ca_status, row.identity_status) == ("available", "available")
        installed = world.on_device(device)
        assert [c.pem for c in world.certificates(trustpoint)][-1] == installed.certificates[0].pem


def test_a_batch_delivered_twice_runs_each_job_once_and_skips_finished_and_unknown_ids(world):
    _, _, job_ids = jobs_for(world, ["FTD-000009", "FTD-000010"])
    ids = [str(job_id) for job_id in job_ids]
    run_jobs(world.ctx, ids, broker=world.broker)
    enrolls = world.sim.sim.requests["enroll"]

    again = run_jobs(world.ctx, [*ids, "not-a-job-id", "00000000-0000-0000-0000-000000000000"], broker=world.broker)

    assert [o.result for o in again] == ["skipped"] * 3
    assert world.sim.sim.requests["enroll"] == enrolls  # no device was asked again
    assert {world.row(Job, j).attempts for j in job_ids} == {1}


def test_a_job_of_a_batch_taken_over_by_another_worker_keeps_that_workers_result(world):
    _, trustpoints, job_ids = jobs_for(world, ["FTD-000011", "FTD-000012", "FTD-000013"])
    taken = job_ids[1]
    enrolled = []

    def take_over_the_second() -> None:
        enrolled.append(True)
        if len(enrolled) == 2:  # while the batch runs the second job, its lease ends and B takes it
            with session_scope(world.engine) as session:
                session.get(Job, taken).lease_expires_at = world.clock() - timedelta(seconds=1)
                session.commit()
                assert jobstore.take_claim(session, taken, now=world.clock(), lease_seconds=LEASE, holder="worker B")
                session.commit()

    slow = replace(world.ctx, devices=EnrollsWith(world.ctx.devices, take_over_the_second))
    outcomes = {o.job_id: o.result for o in run_jobs(slow, job_ids, broker=world.broker)}

    assert outcomes == {job_ids[0]: "succeeded", taken: "skipped", job_ids[2]: "succeeded"}
    job = world.row(Job, taken)
    assert (job.state, job.attempts) == ("running", 2)  # worker B's claim stands
    assert world.certificates(trustpoints[1]) == []
    assert [world.row(Job, j).state for j in (job_ids[0], job_ids[2])] == ["succeeded", "succeeded"]


def test_jobs_of_a_batch_for_a_ca_that_is_down_all_wait_and_only_the_first_asks_the_gate(world):
    ca_failing(world, first_failure_ago=10)
    asked = []
    gate = world.ctx.ca_gate
    real_acquire = gate.acquire
    gate.acquire = lambda *a, **kw: asked.append(a) or real_acquire(*a, **kw)  # type: ignore[method-assign]
    _, _, job_ids = jobs_for(world, ["FTD-000014", "FTD-000015", "FTD-000016"],
                             enrollment_type="est", enrollment_url=EST_URL)
    _, _, (self_signed,) = jobs_for(world, ["FTD-000017"], name="vpn-self-signed")

    outcomes = {o.job_id: o for o in run_jobs(world.ctx, [*job_ids, self_signed], broker=world.broker)}

    assert [outcomes[j].result for j in job_ids] == ["waiting_for_ca"] * 3
    assert outcomes[self_signed].result == "succeeded"  # no CA: not held up by the one that is down
    assert len(asked) == 1
    for job_id in job_ids:
        job = world.row(Job, job_id)
        assert (job.state, job.attempts, job.ca_waits, job.error_code) == ("queued", 0, 1, "ca_unavailable")
    waiting = drain(world.broker, dq_name(BULK_QUEUE))
    assert sorted(m.args[0] for m in waiting) == sorted(str(j) for j in job_ids)  # each published, delayed


def test_a_batch_that_runs_out_of_time_hands_back_the_jobs_it_did_not_start(world):
    _, trustpoints, job_ids = jobs_for(world, ["FTD-000018", "FTD-000019", "FTD-000020"])
    budget = LEASE - permit_lease_ms(world.ctx.settings) / 1000

    def slow_device() -> None:
        world.clock.advance(budget + 1)  # the first job alone uses up the time to start others

    slow = replace(world.ctx, devices=EnrollsWith(world.ctx.devices, slow_device))
    outcomes = {o.job_id: o.result for o in run_jobs(slow, job_ids, broker=world.broker)}

    assert outcomes == {job_ids[0]: "succeeded", job_ids[1]: "skipped", job_ids[2]: "skipped"}
    for job_id in job_ids[1:]:
        job = world.row(Job, job_id)
        assert (job.state, job.attempts) == ("queued", 0)  # the attempt given back
        assert step_names(job) == ["claimed", "handed_back"]
    republished = drain(world.broker, BULK_QUEUE)
    assert sorted(m.args for m in republished) == sorted((str(j),) for j in job_ids[1:])
    # Published again, they run as single jobs.
    assert [world.run(j).result for j in job_ids[1:]] == ["succeeded", "succeeded"]
    assert world.row(Job, job_ids[1]).attempts == 1


@pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)
def test_when_the_batchs_commit_fails_each_job_is_committed_alone_and_only_the_bad_one_is_released(
        world, monkeypatch):
    _, trustpoints, job_ids = jobs_for(world, ["FTD-000021", "FTD-000022", "FTD-000023"])
    bad = trustpoints[1].id
    real_apply = persist.apply_report

    def apply_report(session, trustpoint, report, **kw):
        if trustpoint.id == bad:
            raise RuntimeError("a write that cannot be made")
        return real_apply(session, trustpoint, report, **kw)

    monkeypatch.setattr(persist, "apply_report", apply_report)

    with pytest.raises(RuntimeError):
        run_jobs(world.ctx, job_ids, broker=world.broker)

    assert [world.row(Job, j).state for j in job_ids] == ["succeeded", "queued", "succeeded"]
    released = world.row(Job, job_ids[1])
    assert step_names(released)[-1] == "released"
    assert "configured" in step_names(released)  # its steps were kept
    assert world.certificates(trustpoints[1]) == []
    assert len(world.certificates(trustpoints[0])) == 2


def test_batch_outcomes_keep_the_order_and_kind_of_the_jobs(world):
    _, _, job_ids = jobs_for(world, ["FTD-000024", "FTD-000025"])
    outcomes = batch.run_jobs(world.ctx, job_ids, broker=world.broker)
    assert [(o.job_id, o.kind.value) for o in outcomes] == [(j, "enroll") for j in job_ids]


@pytest.mark.parametrize("db_engine", ["postgres"], indirect=True)
def test_a_job_claimed_by_another_worker_while_the_batch_claims_is_left_to_it(world, monkeypatch):
    _, trustpoints, job_ids = jobs_for(world, ["FTD-000026", "FTD-000027", "FTD-000028"])
    plan, b_claimed = jobstore._plan_claim, []

    def planned_then_taken(session, job_id, **kw):
        planned = plan(session, job_id, **kw)
        if job_id == job_ids[1] and not b_claimed:  # read as queued by the batch, then claimed by B first
            b_claimed.append(job_id)
            with session_scope(world.engine) as other:
                assert jobstore.take_claim(other, job_id, now=world.clock(), lease_seconds=LEASE, holder="worker B")
                other.commit()
        return planned

    monkeypatch.setattr(jobstore, "_plan_claim", planned_then_taken)
    outcomes = {o.job_id: o.result for o in run_jobs(world.ctx, job_ids, broker=world.broker)}

    assert outcomes == {job_ids[0]: "succeeded", job_ids[1]: "skipped", job_ids[2]: "succeeded"}
    taken = world.row(Job, job_ids[1])
    assert (taken.state, taken.attempts) == ("running", 1)
    assert taken.steps[-1]["detail"] == "attempt 1 of 5, by worker B"
    assert world.certificates(trustpoints[1]) == []
