"""Device health checks and keyring regeneration in the workers, with the collaborators of
test_runner.py: SQLite, the device simulator over HTTP on loopback (a share of its keyrings
expired), Dramatiq's in-process broker and a ManualClock.

A health message's devices get their keyring recorded; a device that does not answer keeps its
last keyring and shows why; the health pass publishes the fleet's ids in batches, which the
declared actor checks; a refresh records the keyring too, and a keyring that cannot be read does
not fail it; a regeneration job makes the keyring valid on the device and in its row; a domain's
policy adds one regeneration job for an invalid keyring, and no second while it is unfinished."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import dramatiq
import httpx
import pytest
from sqlalchemy import insert, update
from sqlmodel import Session, select

from services.controller.scheduling.health_pass import run_health_pass
from services.device_sim.config import SimConfig
from services.device_sim.faults import FaultPlan, Outcome
from services.device_sim.server import RunningSim, start_in_thread
from services.worker.actors import declare_actors
from services.worker.health import HealthChecker
from shared.clock import aware
from shared.db import session_scope
from shared.events import BULK_QUEUE, HEALTH_ACTOR
from shared.models import GLOBAL_DOMAIN_ID, Device, Domain, Job
from shared.settings import Settings
from tests.integration.worker.test_runner import World, make_world, step_names
from tests.support.jobs import drain
from tests.support.waiting import wait_until

DEVICES = 16


@pytest.fixture
def sim() -> Iterator[RunningSim]:
    """A fleet of its own per test: tests regenerate keyrings on it."""
    with start_in_thread(SimConfig(devices=DEVICES, seed=5, expired_keyrings=0.4)) as running:
        yield running


@pytest.fixture
def world(db_engine, stub_broker, sim) -> Iterator[World]:
    made = make_world(db_engine, stub_broker, sim)
    yield made
    made.ctx.close()


@pytest.fixture
def checker(world) -> Iterator[HealthChecker]:
    checker = HealthChecker(world.ctx, broker=world.broker, threads=4)
    yield checker
    checker.close()


def register_fleet(world: World, count: int = DEVICES, *, domain_id: uuid.UUID = GLOBAL_DOMAIN_ID) -> list[Device]:
    devices = [Device(domain_id=domain_id, name=f"fw-{i}", serial=f"FTD-{i:06d}",
                      management_url=f"{world.sim.url}/api/devices/FTD-{i:06d}") for i in range(1, count + 1)]
    return [world.add(device) for device in devices]


def expired_serials(sim: RunningSim) -> set[str]:
    return {device.serial for device in sim.fleet.devices if device.keyring_expired}


def rows(world: World) -> dict[str, Device]:
    with Session(world.engine) as session:
        return {d.serial: d for d in session.exec(select(Device)).all()}


def set_offline(sim: RunningSim, serials: list[str]) -> None:
    httpx.put(f"{sim.url}/api/offline", json={"serials": serials}).raise_for_status()


@pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)
def test_a_health_check_records_every_device_s_keyring_and_an_unreachable_one_keeps_its_last(world, checker):
    fleet = register_fleet(world)
    expired = expired_serials(world.sim)
    assert 0 < len(expired) < DEVICES

    result = checker.check([str(d.id) for d in fleet] + [str(uuid.uuid4())])

    assert (result.checked, result.invalid, result.unreachable, result.gone) == (DEVICES, len(expired), 0, 1)
    first = world.clock()
    for serial, row in rows(world).items():
        on_device = world.ctx.devices.get_keyring(row)
        assert row.keyring_valid is (serial not in expired)
        assert row.keyring_reason == ("expired" if serial in expired else None)
        assert aware(row.keyring_not_after) == on_device.not_valid_after
        assert (aware(row.health_checked_at), row.health_error) == (first, None)

    # One device goes off the network: its last keyring stays, with why this check failed.
    away = sorted(expired)[0]
    set_offline(world.sim, [away])
    try:
        world.clock.advance(300)
        result = checker.check([str(d.id) for d in fleet])
    finally:
        set_offline(world.sim, [])

    assert (result.checked, result.unreachable) == (DEVICES, 1)
    after = rows(world)
    assert (after[away].keyring_valid, after[away].keyring_reason) == (False, "expired")
    assert aware(after[away].health_checked_at) == world.clock()
    assert after[away].health_error.startswith(f"device_unreachable: device {away} unreachable: device {away} is "
                                               "unreachable")
    others = [row for serial, row in after.items() if serial != away]
    assert {(aware(r.health_checked_at), r.health_error) for r in others} == {(world.clock(), None)}

    # Back online and regenerated on the device itself: the next check shows it valid, the error gone.
    world.ctx.devices.regenerate_keyring(after[away])
    checker.check([str(after[away].id)])
    row = rows(world)[away]
    assert (row.keyring_valid, row.keyring_reason, row.health_error) == (True, None, None)


def test_the_health_pass_publishes_the_fleet_in_batches_of_ids_that_the_actor_checks(world, stub_broker):
    fleet = register_fleet(world, 5)
    with Session(world.engine) as session:  # more devices, never contacted: the batches' arithmetic
        session.execute(insert(Device), [dict(id=uuid.uuid4(), domain_id=GLOBAL_DOMAIN_ID, name=f"x-{i}",
                                              serial=f"X-{i:04d}", management_url="http://127.0.0.1:9/api")
                                         for i in range(440)])
        session.commit()
        every_id = {str(i) for i in session.exec(select(Device.id)).all()}
    settings = Settings(health_batch_size=100, health_check_seconds=300)

    with Session(world.engine) as session:
        result = run_health_pass(session, stub_broker, settings=settings, page=250)  # pages of 200: keyset paging

    assert result.describe() == "health check of 445 devices in 5 batches" and result.batches == math.ceil(445 / 100)
    messages = drain(stub_broker, BULK_QUEUE)
    assert [m.actor_name for m in messages] == [HEALTH_ACTOR] * 5
    assert [len(m.args[0]) for m in messages] == [100, 100, 100, 100, 45]
    assert all(len(m.args) == 1 and not m.kwargs for m in messages)  # ids only
    published = [device_id for m in messages for device_id in m.args[0]]
    assert sorted(published) == sorted(every_id)
    assert {m.options["max_age"] for m in messages} == {300_000}

    # The declared actor checks a message's devices.
    declare_actors(stub_broker, world.ctx)
    mine = [str(d.id) for d in fleet]
    stub_broker.enqueue(messages[0].copy(args=(mine,)))
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        checked = wait_until(lambda: (found := rows(world)) and all(found[d.serial].health_checked_at for d in fleet)
                             and found, what="the actor's health check")
    finally:
        worker.stop()
    assert all(checked[d.serial].health_checked_at is not None for d in fleet)
    assert all(checked[d.serial].keyring_valid is (d.serial not in expired_serials(world.sim)) for d in fleet)


def refresh_world(world: World, serial: str):
    device = world.device(serial)
    return device, world.trustpoint(device)  # in the database only: the device lacks it (refresh marks it missing)


def test_a_refresh_records_the_device_s_keyring(world):
    serial = sorted(expired_serials(world.sim))[0]
    device, trustpoint = refresh_world(world, serial)

    outcome = world.run(world.job("refresh", trustpoint))

    assert outcome.result == "succeeded"
    row = world.row(Device, device.id)
    assert (row.keyring_valid, row.keyring_reason, aware(row.health_checked_at)) == (False, "expired", world.clock())
    assert aware(row.keyring_not_after) == world.ctx.devices.get_keyring(device).not_valid_after
    job = world.row(Job, outcome.job_id)
    assert step_names(job) == ["claimed", "read", "synced", "keyring"]
    assert job.steps[-1]["detail"].startswith(f"device {serial}: default keyring invalid, reason: expired "
                                              "(certificate ended ")


def test_a_keyring_that_cannot_be_read_is_recorded_and_the_refresh_still_succeeds(sqlite_engine, stub_broker):
    # A device answering half its requests 500: one whose trustpoint read (its 1st request) succeeds and
    # whose keyring read (its 2nd) fails, chosen from the simulator's seeded fault plan.
    config = SimConfig(devices=40, seed=9, error_rate=0.5)
    plan = FaultPlan.from_config(config)
    serial = next(f"FTD-{i:06d}" for i in range(1, 41)
                  if (plan.decide(f"FTD-{i:06d}", 1).outcome, plan.decide(f"FTD-{i:06d}", 2).outcome)
                  == (Outcome.OK, Outcome.ERROR))
    with start_in_thread(config) as flaky:
        world = make_world(sqlite_engine, stub_broker, flaky)
        device, trustpoint = refresh_world(world, serial)
        outcome = world.run(world.job("refresh", trustpoint))
        world.ctx.close()

    assert outcome.result == "succeeded"
    row = world.row(Device, device.id)
    assert (row.keyring_valid, aware(row.health_checked_at)) == (None, world.clock())
    assert row.health_error.startswith(f"device_error: device {serial} answered 500 Internal Server Error: ")
    job = world.row(Job, outcome.job_id)
    assert job.steps[-1]["detail"].startswith(f"device {serial}: could not read the default keyring: device_error")


def regenerate_job(world: World, device: Device, **fields) -> uuid.UUID:
    fields = {"max_attempts": world.ctx.settings.job_max_attempts, **fields}
    return world.add(Job(kind="regenerate_keyring", trustpoint_id=None, trustpoint_name="", device_id=device.id,
                         domain_id=device.domain_id, **fields)).id


def test_a_regeneration_job_makes_the_keyring_valid_on_the_device_and_in_its_row(world, checker):
    serial = sorted(expired_serials(world.sim))[-1]
    [device] = [d for d in register_fleet(world) if d.serial == serial]
    checker.check([str(device.id)])
    assert world.row(Device, device.id).keyring_valid is False

    outcome = world.run(regenerate_job(world, device), queue=BULK_QUEUE)

    assert (outcome.result, outcome.code) == ("succeeded", None)
    job = world.row(Job, outcome.job_id)
    assert step_names(job) == ["claimed", "keyring_regenerated"]
    on_device = world.ctx.devices.get_keyring(device)
    assert on_device.valid
    assert job.steps[-1]["detail"] == (f"device {serial} made a new default keyring, certificate valid until "
                                       f"{on_device.not_valid_after:%Y-%m-%d %H:%M} UTC")
    row = world.row(Device, device.id)
    assert (row.keyring_valid, row.keyring_reason, aware(row.keyring_not_after)) == (True, None,
                                                                                     on_device.not_valid_after)


def test_a_regeneration_of_a_removed_device_fails_saying_so(world):
    ghost = Device(id=uuid.uuid4(), domain_id=GLOBAL_DOMAIN_ID, name="gone", serial="GONE", management_url="x")
    outcome = world.run(regenerate_job(world, ghost))
    assert (outcome.result, outcome.code) == ("failed", "device_gone")


@pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)
def test_a_domain_policy_regenerates_an_invalid_keyring_once_while_its_job_is_unfinished(world, checker, stub_broker):
    emea = world.add(Domain(name="EMEA", parent_id=GLOBAL_DOMAIN_ID, auto_regenerate_keyring=True))
    paris = world.add(Domain(name="Paris", parent_id=emea.id))  # inherits EMEA's policy
    lab = world.add(Domain(name="Lab", parent_id=emea.id, auto_regenerate_keyring=False))
    fleet = register_fleet(world, domain_id=paris.id)
    expired = sorted((d for d in fleet if d.serial in expired_serials(world.sim)), key=lambda d: d.serial)
    assert len(expired) >= 2
    with Session(world.engine) as session:  # the first expired device moves to Lab, where the policy is off
        session.execute(update(Device).where(Device.id == expired[0].id).values(domain_id=lab.id))
        session.commit()
    ids = [str(d.id) for d in fleet]

    first = checker.check(ids)
    again = checker.check(ids)

    assert (first.invalid, first.policy_jobs) == (len(expired), len(expired) - 1)
    assert (again.invalid, again.policy_jobs) == (len(expired), 0)  # their jobs are still queued
    with Session(world.engine) as session:
        jobs = session.exec(select(Job).where(Job.kind == "regenerate_keyring")).all()
    assert sorted(j.device_id for j in jobs) == sorted(d.id for d in expired[1:])
    assert {(j.reason, j.state, j.batch_id, j.trustpoint_id) for j in jobs} == {("policy", "queued", None, None)}
    serial = {d.id: d.serial for d in fleet}
    assert {j.steps[0]["detail"] for j in jobs} == {
        f"the policy of domain EMEA regenerates invalid default keyrings: device {serial[j.device_id]}'s is invalid, "
        "reason: expired" for j in jobs}
    messages = drain(stub_broker, BULK_QUEUE)
    assert sorted(m.args[0] for m in messages) == sorted(str(j.id) for j in jobs)
    assert {m.actor_name for m in messages} == {"regenerate_security_keyring"}

    # Once a job has run, the keyring is valid: no new job.
    for job in jobs:
        assert world.run(job.id, queue=BULK_QUEUE).result == "succeeded"
    third = checker.check(ids)
    assert (third.invalid, third.policy_jobs) == (1, 0)  # Lab's device only, whose policy is off
    with session_scope(world.engine) as session:
        assert len(session.exec(select(Job).where(Job.reason == "policy")).all()) == len(jobs)
