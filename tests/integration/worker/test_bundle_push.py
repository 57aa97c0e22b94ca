"""Pushing certfleet's CA bundle to a device, from the job's claim to the device's recorded bundle
version, with the collaborators of test_runner.py: SQLite, the device simulator over HTTP on
loopback, Dramatiq's in-process broker and a ManualClock.

A push gives the device the current bundle and records its version on the device's row; a device
already holding it gets no PUT; an unreachable device is retried on the bulk queue, then fails
keeping its old version; without a bundle the job fails with no_ca_bundle; a worker whose lease
ran out records nothing; the reconciler re-publishes a lost push on the bulk queue."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from dramatiq.common import dq_name

from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from services.worker import jobstore
from services.worker.actors import declare_actors
from services.worker.runner import run_job
from shared.db import session_scope
from shared.events import BULK_QUEUE
from shared.models import GLOBAL_DOMAIN_ID, CaBundleState, Device, Job
from shared.protocols.ca_bundle import sha256_hex
from tests.integration.worker.test_runner import LEASE, World, make_world, step_names
from tests.support.jobs import drain, reconcile
from tests.support.tls import make_ca, pem

BATCH = uuid.uuid4()


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=10, seed=11)) as running:
        yield running


@pytest.fixture(scope="module")
def unreachable_sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=2, seed=11, unreachable_rate=1.0)) as running:
        yield running


@pytest.fixture(scope="module")
def bundle_pem() -> str:
    return pem(make_ca("certfleet Root CA 1"), make_ca("certfleet Root CA 2"))


@pytest.fixture
def world(sqlite_engine, stub_broker, sim) -> Iterator[World]:
    made = make_world(sqlite_engine, stub_broker, sim)
    yield made
    made.ctx.close()


def install_bundle(world: World, version: str, text: str) -> None:
    """certfleet's current CA bundle, as the controller keeps it."""
    world.add(CaBundleState(version=version, sha256=sha256_hex(text), pem=text, certificates=text.count("BEGIN"),
                            last_modified=world.clock()))


def device(world: World, serial: str, *, bundle_version: str = "") -> Device:
    row = world.device(serial)
    if bundle_version:
        with session_scope(world.engine) as session:
            stored = session.get(Device, row.id)
            stored.bundle_version = bundle_version
            session.add(stored)
            session.commit()
    return row


def push_job(world: World, target: Device, **fields) -> uuid.UUID:
    fields = {"max_attempts": world.ctx.settings.job_max_attempts, "batch_id": BATCH, "reason": "bulk", **fields}
    return world.add(Job(kind="bundle_update", trustpoint_id=None, trustpoint_name="", device_id=target.id,
                         domain_id=GLOBAL_DOMAIN_ID, **fields)).id


def puts(world: World) -> int:
    return world.sim.sim.requests["put_ca_bundle"]


def test_a_push_installs_the_bundle_on_the_device_and_records_its_version(world, bundle_pem):
    install_bundle(world, "7", bundle_pem)
    target = device(world, "FTD-000001", bundle_version="6")
    world.ctx.devices.put_ca_bundle(target, "6", pem(make_ca("certfleet Root CA 0")))
    job_id = push_job(world, target)

    outcome = world.run(job_id, queue=BULK_QUEUE)

    assert (outcome.result, outcome.attempt, outcome.code) == ("succeeded", 1, None)
    job = world.row(Job, job_id)
    assert (job.state, job.error_code, job.lease_expires_at) == ("succeeded", None, None)
    assert step_names(job) == ["claimed", "bundle_read", "bundle_pushed"]
    assert job.steps[1]["detail"] == "device FTD-000001 holds CA bundle version 6 (1 certificate)"
    assert job.steps[2]["detail"] == ("device FTD-000001 installed CA bundle version 7 (2 certificates), "
                                      "replacing CA bundle version 6 (1 certificate)")
    held = world.ctx.devices.get_ca_bundle(target)
    assert (held.version, held.certificates, held.sha256) == ("7", 2, sha256_hex(bundle_pem))
    assert world.row(Device, target.id).bundle_version == "7"


def test_a_device_already_holding_the_bundle_gets_no_put_and_is_recorded(world, bundle_pem):
    install_bundle(world, "7", bundle_pem)
    target = device(world, "FTD-000002")
    world.ctx.devices.put_ca_bundle(target, "7", bundle_pem)
    before = puts(world)
    job_id = push_job(world, target)

    assert world.run(job_id).result == "succeeded"

    assert puts(world) == before
    job = world.row(Job, job_id)
    assert step_names(job) == ["claimed", "bundle_read", "bundle_up_to_date"]
    assert job.steps[-1]["detail"] == "device FTD-000002 already holds CA bundle version 7; nothing pushed"
    assert world.row(Device, target.id).bundle_version == "7"


def test_a_device_holding_another_bundle_under_the_same_version_gets_the_current_one(world, bundle_pem):
    install_bundle(world, "7", bundle_pem)
    target = device(world, "FTD-000003")
    stale = pem(make_ca("Some Other Root"))
    world.ctx.devices.put_ca_bundle(target, "7", stale)
    before = puts(world)

    assert world.run(push_job(world, target)).result == "succeeded"

    assert puts(world) == before + 1
    assert world.ctx.devices.get_ca_bundle(target).sha256 == sha256_hex(bundle_pem)


# --- failures ---------------------------------------------------------------------------------------------

def test_an_unreachable_device_is_retried_on_the_bulk_queue_then_fails_keeping_its_old_version(
        sqlite_engine, stub_broker, unreachable_sim, bundle_pem):
    world = make_world(sqlite_engine, stub_broker, unreachable_sim, job_max_attempts=2)
    install_bundle(world, "7", bundle_pem)
    target = device(world, "FTD-000001", bundle_version="6")
    job_id = push_job(world, target)

    first = world.run(job_id, queue=BULK_QUEUE)

    assert (first.result, first.code, first.attempt) == ("retry_scheduled", "device_unreachable", 1)
    job = world.row(Job, job_id)
    assert (job.state, job.attempts, job.error_code) == ("queued", 1, "device_unreachable")
    [message] = drain(stub_broker, dq_name(BULK_QUEUE))
    assert (message.actor_name, message.args) == ("push_ca_bundle", (str(job_id),))

    world.clock.advance(ms=first.delay_ms)
    last = world.run(job_id, queue=BULK_QUEUE)

    assert (last.result, last.code, last.attempt) == ("failed", "device_unreachable", 2)
    job = world.row(Job, job_id)
    assert job.error_message == (f"device FTD-000001 unreachable after 2 attempts: device FTD-000001 is "
                                 f"unreachable ({target.management_url})")
    assert step_names(job) == ["claimed", "retry_scheduled", "claimed", "failed"]
    assert world.row(Device, target.id).bundle_version == "6"
    assert drain(stub_broker, dq_name(BULK_QUEUE)) == []
    world.ctx.close()


def test_without_a_current_bundle_the_push_fails_with_no_ca_bundle_and_leaves_the_device_alone(world):
    target = device(world, "FTD-000004", bundle_version="3")
    requests_before = sum(world.sim.sim.requests.values())
    job_id = push_job(world, target)

    outcome = world.run(job_id)

    assert (outcome.result, outcome.code, outcome.attempt) == ("failed", "no_ca_bundle", 1)
    job = world.row(Job, job_id)
    assert job.error_message == ("certfleet has no CA bundle to push to device FTD-000004; install one first "
                                 "(certfleet cert-update run-now), then push it again")
    assert sum(world.sim.sim.requests.values()) == requests_before
    assert world.row(Device, target.id).bundle_version == "3"


def test_a_push_for_a_removed_device_fails_saying_so(world, bundle_pem):
    install_bundle(world, "7", bundle_pem)
    job_id = world.add(Job(kind="bundle_update", trustpoint_name="", device_id=uuid.uuid4(),
                           domain_id=GLOBAL_DOMAIN_ID, batch_id=BATCH)).id
    outcome = world.run(job_id)
    assert (outcome.result, outcome.code) == ("failed", "device_gone")


# --- at-least-once ---------------------------------------------------------------------------------------

class PutsWith:
    """The worker's real device client, running ``before_put`` just before the device gets the bundle."""

    def __init__(self, real, before_put) -> None:
        self.real, self.before_put = real, before_put

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def put_ca_bundle(self, device, version, text):
        self.before_put()
        return self.real.put_ca_bundle(device, version, text)


def test_a_worker_that_outlived_its_lease_records_nothing_over_the_one_that_took_the_job(world, bundle_pem):
    install_bundle(world, "7", bundle_pem)
    target = device(world, "FTD-000005", bundle_version="6")
    job_id = push_job(world, target)

    def taken_over() -> None:
        world.clock.advance(LEASE + 1)
        with session_scope(world.engine) as session:
            assert jobstore.take_claim(session, job_id, now=world.clock(), lease_seconds=LEASE, holder="worker B")
            session.commit()

    outcome = run_job(replace(world.ctx, devices=PutsWith(world.ctx.devices, taken_over)), job_id,
                      broker=world.broker)

    assert outcome.result == "skipped"
    assert (world.row(Job, job_id).state, world.row(Job, job_id).attempts) == ("running", 2)
    assert world.row(Device, target.id).bundle_version == "6"  # worker B records what it finds


def test_the_reconciler_publishes_a_lost_push_again_on_the_bulk_queue(world, bundle_pem):
    target = device(world, "FTD-000006")
    job_id = push_job(world, target, lease_expires_at=world.clock() - timedelta(seconds=1))

    assert reconcile(world.engine, world.broker, world.clock()) == 1

    [message] = drain(world.broker, BULK_QUEUE)
    assert (message.actor_name, message.args) == ("push_ca_bundle", (str(job_id),))


def test_the_push_actor_is_declared_with_the_others(world):
    actors = declare_actors(world.broker, world.ctx)
    assert "push_ca_bundle" in actors and "enroll_trustpoint" in actors
