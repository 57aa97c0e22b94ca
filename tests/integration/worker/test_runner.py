"""Running one job from claim to outcome with its real collaborators: the job and trustpoint rows
in SQLite, the device simulator over HTTP on loopback through the worker's device client,
Dramatiq's in-process broker for re-published messages, and the CA gate in process. Time is a
ManualClock: the job's steps, leases and retry times are checked exactly.

What an operator sees is checked: the job's state, attempts, steps and error; the trustpoint's
statuses and certificates; what the device has; and what waits on the queue."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta

import dramatiq
import pytest
from dramatiq.common import dq_name
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from services.worker import jobstore
from services.worker.ca_gate import CIRCUIT_THRESHOLD, MemoryCaGate, ca_endpoint
from services.worker.context import WorkerContext
from services.worker.retry_policy import RetryPolicy
from services.worker.runner import run_job
from shared.clock import aware, utcnow
from shared.db import session_scope
from shared.device_client import HttpDeviceClient
from shared.events import JOBS_QUEUE
from shared.models import GLOBAL_DOMAIN_ID, Certificate, Device, EnrollmentObject, Job, Trustpoint
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.support.clock import ManualClock
from tests.support.jobs import drain

LEASE = 60
SECRET_KEY = "runner-test-secret-key"


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    """A healthy fleet; each test uses devices of its own."""
    with start_in_thread(SimConfig(devices=20, seed=7)) as running:
        yield running


@pytest.fixture(scope="module")
def failing_sim() -> Iterator[RunningSim]:
    """A fleet whose every device request fails with a 500."""
    with start_in_thread(SimConfig(devices=3, seed=7, error_rate=1.0)) as running:
        yield running


@dataclass
class World:
    engine: Engine
    broker: dramatiq.Broker
    sim: RunningSim
    clock: ManualClock
    ctx: WorkerContext

    def add(self, *rows):
        with session_scope(self.engine) as session:
            session.add_all(rows)
            session.commit()
            for row in rows:
                session.refresh(row)
        return rows[0]

    def device(self, serial: str) -> Device:
        return self.add(Device(domain_id=GLOBAL_DOMAIN_ID, name=f"fw-{serial}", serial=serial,
                               fqdn=f"{serial.lower()}.fleet.example",
                               management_url=f"{self.sim.url}/api/devices/{serial}"))

    def trustpoint(self, device: Device, name: str = "vpn", **fields) -> Trustpoint:
        fields = {"enrollment_type": "self_signed", "key_type": "ecdsa", "key_size": 256, **fields}
        obj = self.add(EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name=name, **fields))
        return self.add(Trustpoint(device_id=device.id, domain_id=GLOBAL_DOMAIN_ID, enrollment_object_id=obj.id,
                                   name=name, enrollment_type=obj.enrollment_type))

    def job(self, kind: str, trustpoint: Trustpoint, **fields) -> uuid.UUID:
        fields = {"max_attempts": self.ctx.settings.job_max_attempts, "device_id": trustpoint.device_id, **fields}
        return self.add(Job(kind=kind, trustpoint_id=trustpoint.id, domain_id=GLOBAL_DOMAIN_ID,
                            trustpoint_name=trustpoint.name, **fields)).id

    def run(self, job_id, **kw):
        return run_job(self.ctx, job_id, broker=self.broker, **kw)

    def row(self, model, row_id):
        with Session(self.engine) as session:
            return session.get(model, row_id)

    def certificates(self, trustpoint: Trustpoint) -> list[Certificate]:
        with Session(self.engine) as session:
            query = select(Certificate).where(Certificate.trustpoint_id == trustpoint.id)
            return sorted(session.exec(query).all(), key=lambda c: (c.role, c.chain_position))

    def on_device(self, device: Device, name: str = "vpn"):
        return self.ctx.devices.get_trustpoint(device, name)


def make_world(engine, broker, sim, **settings) -> World:
    clock = ManualClock()
    settings = Settings(database_url=str(engine.url), secret_key=SECRET_KEY, job_lease_seconds=LEASE,
                        retry_backoff_ms=100, retry_backoff_max_ms=1000, device_timeout_seconds=5.0, **settings)
    ctx = WorkerContext(settings=settings, engine=engine, devices=HttpDeviceClient(timeout_seconds=5.0),
                        retry=RetryPolicy.from_settings(settings), secrets=SecretBox(SECRET_KEY), clock=clock,
                        rng=random.Random(3), ca_gate=MemoryCaGate(clock_ms=clock.ms))
    return World(engine=engine, broker=broker, sim=sim, clock=clock, ctx=ctx)


@pytest.fixture
def world(sqlite_engine, stub_broker, sim) -> Iterator[World]:
    made = make_world(sqlite_engine, stub_broker, sim)
    yield made
    made.ctx.close()


def step_names(job: Job) -> list[str]:
    return [step["step"] for step in job.steps]


# --- a job that goes well --------------------------------------------------------------------------

def test_an_enrollment_runs_from_its_claim_to_the_certificate_installed_and_recorded(world):
    device = world.device("FTD-000001")
    trustpoint = world.trustpoint(device, organization="Example Corp", include_fqdn=True)
    job_id = world.job("enroll", trustpoint)

    outcome = world.run(job_id)

    assert (outcome.result, outcome.attempt, outcome.code) == ("succeeded", 1, None)
    job = world.row(Job, job_id)
    assert (job.state, job.attempts, job.error_code, job.lease_expires_at) == ("succeeded", 1, None, None)
    assert step_names(job) == ["claimed", "configured", "enroll", "installed"]
    assert {step["at"] for step in job.steps} == {world.clock().isoformat()}  # the worker's clock, throughout
    assert aware(job.started_at) == aware(job.finished_at) == world.clock()
    row = world.row(Trustpoint, trustpoint.id)
    assert (row.ca_status, row.identity_status, row.error_code) == ("available", "available", None)
    # What the database shows is what the device has installed.
    installed = world.on_device(device)
    certificates = world.certificates(trustpoint)
    assert [(c.role, c.pem) for c in certificates] == [("ca", installed.certificates[0].pem),
                                                       ("identity", installed.certificates[0].pem)]
    assert {c.job_id for c in certificates} == {job_id}
    assert "CN=ftd-000001.fleet.example" in certificates[1].subject


def test_a_delete_removes_the_trustpoint_from_the_device_then_from_the_database(world):
    device = world.device("FTD-000002")
    trustpoint = world.trustpoint(device)
    assert world.run(world.job("enroll", trustpoint)).result == "succeeded"
    job_id = world.job("delete", trustpoint)

    assert world.run(job_id).result == "succeeded"

    assert step_names(world.row(Job, job_id)) == ["claimed", "deleted_on_device", "deleted"]
    assert world.on_device(device) is None
    assert world.row(Trustpoint, trustpoint.id) is None and world.certificates(trustpoint) == []


def test_a_refresh_of_a_trustpoint_the_device_lost_marks_it_missing(world):
    device = world.device("FTD-000003")
    trustpoint = world.trustpoint(device)
    assert world.run(world.job("enroll", trustpoint)).result == "succeeded"
    world.ctx.devices.delete_trustpoint(device, "vpn")  # someone removed it on the device itself
    world.clock.advance(30)

    assert world.run(world.job("refresh", trustpoint)).result == "succeeded"

    row = world.row(Trustpoint, trustpoint.id)
    assert (row.ca_status, row.identity_status, row.error_code) == ("failed", "failed", "trustpoint_missing")
    assert row.error_message == "trustpoint vpn is no longer on device FTD-000003; re-enroll it to install it again"
    assert aware(row.status_changed_at) == world.clock()
    assert world.certificates(trustpoint) == []


# --- a device that fails ------------------------------------------------------------------------------

def test_a_device_error_puts_the_job_back_until_its_retry_is_due_and_publishes_it_delayed(
        sqlite_engine, stub_broker, failing_sim):
    world = make_world(sqlite_engine, stub_broker, failing_sim, job_max_attempts=2)
    device = world.device("FTD-000001")
    trustpoint = world.trustpoint(device)
    job_id = world.job("enroll", trustpoint)

    first = world.run(job_id)

    assert (first.result, first.code, first.attempt) == ("retry_scheduled", "device_error", 1)
    assert 0 <= first.delay_ms <= 100  # the first retry's ceiling: CERTFLEET_RETRY_BACKOFF_MS
    job = world.row(Job, job_id)
    due = world.clock() + timedelta(milliseconds=first.delay_ms)
    assert (job.state, job.attempts, job.error_code) == ("queued", 1, "device_error")
    assert aware(job.next_attempt_at) == due
    assert aware(job.lease_expires_at) == due + timedelta(seconds=LEASE)  # the reconciler leaves it alone
    assert step_names(job) == ["claimed", "retry_scheduled"]
    assert job.steps[-1]["detail"].startswith("device_error: device FTD-000001 ")
    assert job.steps[-1]["detail"].endswith(f"attempt 1 of 2 failed, next in {first.delay_ms / 1000:.2f} s")
    [message] = drain(stub_broker, dq_name(JOBS_QUEUE))  # the delay queue
    assert (message.actor_name, message.args) == ("enroll_trustpoint", (str(job_id),))
    assert drain(stub_broker, JOBS_QUEUE) == []

    # The last attempt fails too: the job and the trustpoint fail, saying how often it was tried.
    world.clock.advance(ms=first.delay_ms)
    last = world.run(job_id)

    assert (last.result, last.code, last.attempt) == ("failed", "device_error", 2)
    job = world.row(Job, job_id)
    assert (job.state, job.attempts, job.lease_expires_at) == ("failed", 2, None)
    assert job.error_message == (
        "device FTD-000001 answered 500 Internal Server Error after 2 attempts: device FTD-000001 failed to process "
        f"the request ({device.management_url})")
    row = world.row(Trustpoint, trustpoint.id)
    assert (row.ca_status, row.identity_status) == ("failed", "failed")
    assert (row.error_code, row.error_message) == ("device_error", job.error_message)
    assert drain(stub_broker, dq_name(JOBS_QUEUE)) == []
    world.ctx.close()


# --- a worker that loses its job -----------------------------------------------------------------------

class EnrollsWith:
    """The worker's real device client, running ``before_enroll`` just before the device enrolls."""

    def __init__(self, real: HttpDeviceClient, before_enroll) -> None:
        self.real, self.before_enroll = real, before_enroll

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def enroll(self, device, name, mode="enroll", **kwargs):
        self.before_enroll()
        return self.real.enroll(device, name, mode, **kwargs)


def test_a_worker_that_outlived_its_lease_records_nothing_over_the_one_that_took_the_job(world):
    device = world.device("FTD-000004")
    trustpoint = world.trustpoint(device)
    job_id = world.job("enroll", trustpoint)

    def taken_over() -> None:
        world.clock.advance(LEASE + 1)
        with session_scope(world.engine) as session:
            assert jobstore.take_claim(session, job_id, now=world.clock(), lease_seconds=LEASE, holder="worker B")
            session.commit()

    slow = replace(world.ctx, devices=EnrollsWith(world.ctx.devices, taken_over))
    outcome = run_job(slow, job_id, broker=world.broker)

    assert outcome.result == "skipped"
    job = world.row(Job, job_id)
    assert (job.state, job.attempts) == ("running", 2)  # worker B's claim stands
    assert job.steps[-1]["detail"] == "attempt 2 of 5, taken over after attempt 1's lease expired, by worker B"
    row = world.row(Trustpoint, trustpoint.id)
    assert (row.ca_status, row.identity_status) == ("in_progress", "in_progress")
    assert world.certificates(trustpoint) == []


def test_an_unexpected_error_hands_the_job_back_for_the_next_delivery(world):
    device = world.device("FTD-000005")
    trustpoint = world.trustpoint(device)
    job_id = world.job("enroll", trustpoint)

    def bug() -> None:
        raise RuntimeError("a bug in the worker")

    with pytest.raises(RuntimeError, match="a bug in the worker"):
        run_job(replace(world.ctx, devices=EnrollsWith(world.ctx.devices, bug)), job_id, broker=world.broker)

    job = world.row(Job, job_id)
    assert (job.state, job.attempts) == ("queued", 1)
    assert job.steps[-1]["step"] == "released"
    assert job.steps[-1]["detail"] == "unexpected RuntimeError; the job will be tried again"
    assert aware(job.lease_expires_at) == world.clock() + timedelta(seconds=LEASE)

    retried = world.run(job_id)  # Dramatiq delivers the message again
    assert (retried.result, retried.attempt) == ("succeeded", 2)


# --- jobs with nothing left to do ----------------------------------------------------------------------

def test_a_job_whose_trustpoint_or_device_went_away_fails_saying_which(world):
    device = world.device("FTD-000006")
    trustpoint = world.trustpoint(device)
    job_id = world.job("enroll", trustpoint)
    with session_scope(world.engine) as session:
        session.delete(session.get(Trustpoint, trustpoint.id))
        session.commit()
    outcome = world.run(job_id)
    assert (outcome.result, outcome.code) == ("failed", "trustpoint_gone")
    assert world.row(Job, job_id).error_message == (
        "trustpoint vpn of device FTD-000006 was deleted before the job ran")

    orphan = world.job("enroll", trustpoint, device_id=uuid.uuid4())
    outcome = world.run(orphan)
    assert (outcome.result, outcome.code) == ("failed", "device_gone")
    assert world.row(Job, orphan).error_message == "the device of trustpoint vpn was removed before the job ran"


@pytest.mark.parametrize(("fields", "missing"), [
    ({"enrollment_type": "est", "enrollment_url": "https://127.0.0.1:1/.well-known/est/", "username": "fw"},
     'has username \'fw\' but no password'),
    ({"enrollment_type": "scep", "enrollment_url": "http://127.0.0.1:1/scep"}, "has no challenge password"),
])
def test_an_enrollment_whose_object_lost_its_secret_fails_asking_for_it_before_anything_is_sent(
        world, fields, missing):
    """An object loses its secret when its CA URL, trust or username change without a new one:
    its next enrollment asks for the secret instead of going to the CA without it."""
    device = world.device(f"FTD-SECRET-{fields['enrollment_type']}")
    trustpoint = world.trustpoint(device, **fields)
    job_id = world.job("enroll", trustpoint)
    requests_before = sum(world.sim.sim.requests.values())

    outcome = world.run(job_id)

    assert (outcome.result, outcome.code) == ("failed", "enrollment_secret_missing")
    job = world.row(Job, job_id)
    assert job.error_message.startswith(f"enrollment object vpn {missing} (a stored secret is dropped when")
    assert f"PUT /api/v1/domains/{GLOBAL_DOMAIN_ID}/enrollment-objects/" in job.error_message
    assert sum(world.sim.sim.requests.values()) == requests_before  # the device was left alone
    assert world.row(Trustpoint, trustpoint.id).error_code == "enrollment_secret_missing"


def test_a_job_whose_earlier_holders_all_stopped_midway_fails_instead_of_looping(world):
    device = world.device("FTD-000007")
    trustpoint = world.trustpoint(device)
    job_id = world.job("enroll", trustpoint, state="running", attempts=5, max_attempts=5,
                       lease_expires_at=world.clock() - timedelta(seconds=1))
    outcome = world.run(job_id)
    assert (outcome.result, outcome.code, outcome.attempt) == ("failed", "attempts_exhausted", 6)
    assert world.row(Job, job_id).error_message.startswith("gave up after 5 attempts: the workers running this job "
                                                           "stopped before finishing it")
    assert world.on_device(device) is None  # the device was not asked again


def test_messages_for_no_job_finished_jobs_and_held_jobs_are_dropped(world):
    device = world.device("FTD-000008")
    trustpoint = world.trustpoint(device)
    assert world.run("not-a-job-id").result == "skipped"
    assert world.run(uuid.uuid4()).result == "skipped"
    done = world.job("enroll", trustpoint, state="succeeded")
    held = world.job("enroll", trustpoint, state="running", attempts=1,
                     lease_expires_at=world.clock() + timedelta(seconds=1))
    assert world.run(done).result == "skipped" and world.run(held).result == "skipped"
    assert (world.row(Job, held).state, world.row(Job, held).attempts) == ("running", 1)
    assert world.on_device(device) is None


# --- waiting for the CA ----------------------------------------------------------------------------------

EST_URL = "https://127.0.0.1:1/.well-known/est/"  # never reached: the gate stops the job first


def ca_failing(world: World, *, first_failure_ago: float) -> None:
    """The CA's circuit opens now, its first failure ``first_failure_ago`` seconds back."""
    gate, endpoint = world.ctx.ca_gate, ca_endpoint(EST_URL)
    gate.finish(endpoint, "", outcome="down", cap_ms=60_000, jitter=0)
    world.clock.advance(first_failure_ago)
    for _ in range(CIRCUIT_THRESHOLD - 1):
        circuit = gate.finish(endpoint, "", outcome="down", cap_ms=60_000, jitter=0)
    assert circuit.open


def test_a_job_for_a_ca_that_is_down_waits_queued_without_spending_an_attempt(world):
    device = world.device("FTD-000009")
    trustpoint = world.trustpoint(device, enrollment_type="est", enrollment_url=EST_URL)
    job_id = world.job("enroll", trustpoint)
    ca_failing(world, first_failure_ago=10)
    requests_before = sum(world.sim.sim.requests.values())

    outcome = world.run(job_id)

    assert (outcome.result, outcome.code) == ("waiting_for_ca", "ca_unavailable")
    job = world.row(Job, job_id)
    assert (job.state, job.attempts, job.ca_waits, job.error_code) == ("queued", 0, 1, "ca_unavailable")
    assert job.error_message == "CA at https://127.0.0.1:1 unavailable since 2030-01-01 12:00:00 UTC, waiting for it"
    assert aware(job.next_attempt_at) == world.clock() + timedelta(milliseconds=outcome.delay_ms)
    assert step_names(job) == ["claimed", "waiting_for_ca"]
    assert [m.args for m in drain(world.broker, dq_name(JOBS_QUEUE))] == [(str(job_id),)]
    assert sum(world.sim.sim.requests.values()) == requests_before  # the device was left alone
    row = world.row(Trustpoint, trustpoint.id)
    assert (row.ca_status, row.identity_status) == ("in_progress", "in_progress")


def test_a_job_for_a_ca_down_longer_than_the_give_up_time_fails_saying_since_when(world):
    device = world.device("FTD-000010")
    trustpoint = world.trustpoint(device, enrollment_type="est", enrollment_url=EST_URL)
    job_id = world.job("enroll", trustpoint)
    ca_failing(world, first_failure_ago=3600.001)  # CERTFLEET_CA_OUTAGE_GIVE_UP_SECONDS: an hour

    outcome = world.run(job_id)

    assert (outcome.result, outcome.code, outcome.attempt) == ("failed", "ca_unavailable", 1)
    message = world.row(Job, job_id).error_message
    assert message.startswith("CA at https://127.0.0.1:1 unavailable since 2030-01-01 12:00:00 UTC, 60 min; "
                              "gave up waiting after 60 min (CERTFLEET_CA_OUTAGE_GIVE_UP_SECONDS)")
    row = world.row(Trustpoint, trustpoint.id)
    assert (row.identity_status, row.error_code, row.error_message) == ("failed", "ca_unavailable", message)


# --- renewal ---------------------------------------------------------------------------------------------

def identity(world: World, trustpoint: Trustpoint) -> Certificate:
    return next(c for c in world.certificates(trustpoint) if c.role == "identity")


def test_an_installed_certificate_gets_its_renewal_time_and_a_renewal_replaces_it_once(world):
    world.clock.advance((utcnow() - world.clock()).total_seconds())  # the simulator issues at the real time
    device = world.device("FTD-000011")
    trustpoint = world.trustpoint(device, validity_days=90)
    assert world.run(world.job("enroll", trustpoint)).result == "succeeded"
    first = identity(world, trustpoint)
    row = world.row(Trustpoint, trustpoint.id)
    window = (aware(first.not_after) - aware(first.not_before)) / 3
    window_start = aware(first.not_after) - window
    assert window_start <= aware(row.renewal_due_at) < window_start + window * world.ctx.settings.renewal_spread
    assert (row.last_renewal_at, row.renewal_failures) == (None, 0)

    world.clock.advance(60)
    job_id = world.job("re_enroll", trustpoint, reason="renewal")
    assert world.run(job_id).result == "succeeded"

    renewed = identity(world, trustpoint)
    assert renewed.serial_number != first.serial_number and renewed.job_id == job_id
    row = world.row(Trustpoint, trustpoint.id)
    assert aware(row.last_renewal_at) == world.clock()
    new_window = (aware(renewed.not_after) - aware(renewed.not_before)) / 3
    assert aware(renewed.not_after) - new_window <= aware(row.renewal_due_at) < aware(renewed.not_after)
    assert (row.renewal_failures, row.renewal_error_code) == (0, None)


def test_a_refresh_that_finds_the_same_certificate_keeps_a_failed_renewals_backoff(world):
    device = world.device("FTD-000012")
    trustpoint = world.trustpoint(device)
    assert world.run(world.job("enroll", trustpoint)).result == "succeeded"
    backoff = world.clock() + timedelta(hours=2)
    with session_scope(world.engine) as session:
        row = session.get(Trustpoint, trustpoint.id)
        row.renewal_due_at, row.renewal_failures, row.renewal_error_code = backoff, 3, "ca_unavailable"
        session.add(row)
        session.commit()

    assert world.run(world.job("refresh", trustpoint)).result == "succeeded"

    row = world.row(Trustpoint, trustpoint.id)
    assert (aware(row.renewal_due_at), row.renewal_failures, row.renewal_error_code) == (
        backoff, 3, "ca_unavailable")


def test_a_failed_renewal_shows_its_error_and_is_due_again_after_a_backoff(sqlite_engine, stub_broker, failing_sim):
    world = make_world(sqlite_engine, stub_broker, failing_sim, job_max_attempts=1, renewal_retry_seconds=900)
    device = world.device("FTD-000001")
    trustpoint = world.trustpoint(device)
    ends = world.clock() + timedelta(days=10)
    world.add(Certificate(trustpoint_id=trustpoint.id, role="identity", pem="-", subject="CN=x", issuer="CN=x",
                          serial_number="01", not_before=ends - timedelta(days=90), not_after=ends,
                          key_algorithm="EC", key_size=256, signature_algorithm="ecdsa-with-SHA256",
                          fingerprint_sha256="00" * 32))

    assert world.run(world.job("re_enroll", trustpoint, reason="renewal")).result == "failed"

    row = world.row(Trustpoint, trustpoint.id)
    assert (row.renewal_failures, row.renewal_error_code) == (1, "device_error")
    assert "FTD-000001" in row.renewal_error_message
    assert aware(row.renewal_due_at) == world.clock() + timedelta(seconds=900)

    # An operator's re-enroll that fails is not a renewal: the renewal state stays as it was.
    assert world.run(world.job("re_enroll", trustpoint)).result == "failed"
    assert world.row(Trustpoint, trustpoint.id).renewal_failures == 1
