"""The worker end to end with real components: the actors on a Redis broker (db 12) run by
an in-process Dramatiq worker, the device simulator over HTTP on loopback, and the
database on SQLite or PostgreSQL. The test writes the rows the controller would (domain,
devices, enrollment objects, trustpoints, jobs), publishes the job ids, and checks what an
operator would see: job outcomes and steps, trustpoint statuses, installed certificates,
what the device has, and the metrics."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
import redis
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY
from sqlmodel import select

from services.device_sim.config import SimConfig
from services.device_sim.server import start_in_thread
from services.worker.actors import declare_actors
from services.worker.cli import start_embedded_worker
from services.worker.context import WorkerContext
from shared.broker import make_broker
from shared.clock import utcnow
from shared.db import init_db, make_engine, session_scope
from shared.device_api import Inventory
from shared.events import BULK_QUEUE, JOBS_QUEUE, publish_job
from shared.logging import configure_logging
from shared.models import GLOBAL_DOMAIN_ID, Certificate, Device, EnrollmentObject, Job, Trustpoint
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.support.pg import fresh_database, postgres_or_skip

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/12"
SECRET = "est-password-Xq7-do-not-log"


def redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and Redis is unreachable: {exc}")
        pytest.skip(f"Redis is unreachable: {exc}")


def flush_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def database(kind: str, tmp_path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'worker.db'}"
        return
    postgres_or_skip()
    with fresh_database() as url:
        yield url


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Harness:
    """The worker running against Redis, a database and a simulated fleet."""

    def __init__(self, *, database_url: str, sim: SimConfig, **settings) -> None:
        defaults = dict(retry_backoff_ms=20, retry_backoff_max_ms=200, device_timeout_seconds=3.0,
                        job_lease_seconds=30, job_max_attempts=5)
        self.settings = Settings(database_url=database_url, broker_url=REDIS_URL, **{**defaults, **settings})
        self.sim_config = sim

    def start(self) -> Harness:
        flush_redis()
        self.engine = make_engine(self.settings)
        init_db(self.engine)
        self.sim = start_in_thread(self.sim_config)
        self.broker = make_broker(self.settings)
        self.context = WorkerContext.create(self.settings, engine=self.engine, rng=random.Random(5))
        self.actors = declare_actors(self.broker, self.context)
        self.worker = start_embedded_worker(self.broker, self.context, threads=8, worker_timeout_ms=100)
        self.http = httpx.Client(timeout=5)
        return self

    def stop(self) -> None:
        self.worker.stop(timeout=10_000)
        self.broker.close()
        self.sim.stop()
        self.context.close()
        self.http.close()
        self.engine.dispose()
        flush_redis()

    # --- what the controller would have written ----------------------------------------------

    def register_fleet(self) -> list[Device]:
        """Every simulated device, registered as an admin's import does: trusted at its management URL,
        with the endpoint credential the inventory carries."""
        answer = self.http.get(f"{self.sim.url}/api/inventory", params={"offset": 0, "limit": 5000})
        inventory = Inventory.model_validate_json(answer.content)
        box = SecretBox(self.settings.secret_key)
        devices = [
            Device(domain_id=GLOBAL_DOMAIN_ID, name=d.name, model=d.model, serial=d.serial,
                   ip_address=d.ip_address, fqdn=d.fqdn, management_url=d.management_url,
                   endpoint_approved_url=d.management_url, endpoint_approved_by="test (admin)",
                   endpoint_approved_at=utcnow(),
                   endpoint_credential_blob=box.seal(d.endpoint_credential.get_secret_value().encode()))
            for d in inventory.items
        ]
        return self.add(*devices)

    def add(self, *rows):
        with session_scope(self.engine) as session:
            session.add_all(rows)
            session.commit()
        return list(rows)

    def enrollment_object(self, name: str, **fields) -> EnrollmentObject:
        fields = {"enrollment_type": "self_signed", "key_type": "ecdsa", "key_size": 256, **fields}
        return self.add(EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name=name, **fields))[0]

    def install(self, devices: list[Device], obj: EnrollmentObject) -> list[Trustpoint]:
        return self.add(*[
            Trustpoint(device_id=d.id, domain_id=GLOBAL_DOMAIN_ID, enrollment_object_id=obj.id, name=obj.name,
                       enrollment_type=obj.enrollment_type)
            for d in devices
        ])

    def submit(
        self, kind: str, trustpoint: Trustpoint, *, queue: str = JOBS_QUEUE, times: int = 1
    ) -> uuid.UUID:
        now = utcnow()
        job = Job(kind=kind, trustpoint_id=trustpoint.id, device_id=trustpoint.device_id,
                  domain_id=trustpoint.domain_id, trustpoint_name=trustpoint.name,
                  max_attempts=self.settings.job_max_attempts,
                  lease_expires_at=now + timedelta(seconds=self.settings.job_lease_seconds),
                  steps=[{"at": now.isoformat(), "step": "requested", "detail": f"{kind} requested by test"}])
        self.add(job)
        for _ in range(times):
            publish_job(self.broker, kind, job.id, queue=queue)
        return job.id

    # --- what the operator sees ------------------------------------------------------------------

    def wait(self, job_ids: list[uuid.UUID], timeout: float = 60) -> dict[uuid.UUID, Job]:
        deadline = time.monotonic() + timeout
        while True:
            with session_scope(self.engine) as session:
                jobs = session.exec(select(Job).where(Job.id.in_(job_ids))).all()  # type: ignore[attr-defined]
            if all(j.state in ("succeeded", "failed") for j in jobs) and len(jobs) == len(job_ids):
                return {j.id: j for j in jobs}
            if time.monotonic() > deadline:
                states = sorted((j.state, j.attempts, j.error_code) for j in jobs)
                raise AssertionError(f"jobs did not finish within {timeout} s: {states}")
            time.sleep(0.05)

    def drain(self) -> None:
        """Wait until every message, duplicates included, has been handled."""
        for queue in (JOBS_QUEUE, BULK_QUEUE):
            self.broker.join(queue, timeout=20_000)
        self.worker.join()

    def trustpoint(self, trustpoint_id: uuid.UUID) -> Trustpoint | None:
        with session_scope(self.engine) as session:
            return session.get(Trustpoint, trustpoint_id)

    def certificates(self, trustpoint_id: uuid.UUID, role: str | None = "identity") -> list[Certificate]:
        query = select(Certificate).where(Certificate.trustpoint_id == trustpoint_id)
        if role:
            query = query.where(Certificate.role == role)
        with session_scope(self.engine) as session:
            return list(session.exec(query).all())

    def on_device(self, device: Device, name: str) -> httpx.Response:
        return self.http.get(f"{device.management_url}/trustpoints/{name}")


@pytest.fixture
def make_harness(tmp_path):
    redis_or_skip()
    with contextlib.ExitStack() as stack:

        def make(*, db: str = "sqlite", sim: SimConfig | None = None, **settings) -> Harness:
            url = stack.enter_context(database(db, tmp_path))
            harness = Harness(database_url=url, sim=sim or SimConfig(devices=5, seed=1), **settings).start()
            stack.callback(harness.stop)
            return harness

        yield make


def load_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def verify_self_signed(cert: x509.Certificate) -> None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                   cert.signature_hash_algorithm)
    else:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def step_names(job: Job) -> list[str]:
    return [s["step"] for s in job.steps]


# --- enrollment ---------------------------------------------------------------------------------

@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_fifty_self_signed_trustpoints_enroll(make_harness, db):
    h = make_harness(db=db, sim=SimConfig(devices=50, seed=3))
    devices = h.register_fleet()
    obj = h.enrollment_object("vpn-ecdsa", organization="Example Corp", organizational_unit="NetOps",
                              country="US", include_fqdn=True)
    trustpoints = h.install(devices, obj)
    succeeded = metric("certfleet_jobs_total", kind="enroll", outcome="succeeded")
    enrolled = metric("certfleet_enrollments_total", method="self_signed", outcome="succeeded")
    # Half of them as a bulk operation: the same actors serve both queues.
    queues = [JOBS_QUEUE, BULK_QUEUE] * 25
    job_ids = [h.submit("enroll", tp, queue=queue) for tp, queue in zip(trustpoints, queues, strict=True)]
    jobs = h.wait(job_ids)

    fingerprints = set()
    for device, tp, job_id in zip(devices, trustpoints, job_ids, strict=True):
        job = jobs[job_id]
        assert (job.state, job.attempts, job.error_code) == ("succeeded", 1, None)
        assert step_names(job) == ["requested", "claimed", "configured", "enroll", "installed"]
        times = [datetime.fromisoformat(s["at"]) for s in job.steps]
        assert all(t.tzinfo is not None for t in times) and times == sorted(times)
        assert job.finished_at is not None and job.lease_expires_at is None

        row = h.trustpoint(tp.id)
        assert (row.ca_status, row.identity_status, row.error_code) == ("available", "available", None)
        (identity,) = h.certificates(tp.id)
        cert = load_cert(identity.pem)
        verify_self_signed(cert)
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        subject = {a.oid: a.value for a in cert.subject}
        assert subject[NameOID.ORGANIZATION_NAME] == "Example Corp"
        assert subject[NameOID.ORGANIZATIONAL_UNIT_NAME] == "NetOps"
        assert subject[NameOID.COUNTRY_NAME] == "US"
        assert subject[NameOID.COMMON_NAME] == device.fqdn
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [device.fqdn]
        assert (identity.key_algorithm, identity.key_size, identity.job_id) == ("ECDSA", 256, job_id)
        # What the database shows is what the device has installed.
        on_device = h.on_device(device, obj.name).json()
        assert [c["pem"] for c in on_device["certificates"] if c["role"] == "identity"] == [identity.pem]
        fingerprints.add(identity.fingerprint_sha256)
    assert len(fingerprints) == 50

    assert metric("certfleet_jobs_total", kind="enroll", outcome="succeeded") == succeeded + 50
    assert metric("certfleet_enrollments_total", method="self_signed", outcome="succeeded") == enrolled + 50


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_job_delivered_several_times_installs_one_certificate(make_harness, db):
    h = make_harness(db=db, sim=SimConfig(devices=10, seed=4))
    devices = h.register_fleet()
    trustpoints = h.install(devices, h.enrollment_object("vpn"))
    job_ids = []
    for tp in trustpoints:
        job_ids.append(h.submit("enroll", tp, times=2))
        publish_job(h.broker, "enroll", job_ids[-1], queue=BULK_QUEUE)  # and once more on the other queue
    jobs = h.wait(job_ids)
    h.drain()

    for device, tp, job_id in zip(devices, trustpoints, job_ids, strict=True):
        job = h.wait([job_id])[job_id]
        assert (job.state, job.attempts) == ("succeeded", 1)
        assert step_names(job).count("claimed") == 1
        row = h.trustpoint(tp.id)
        assert (row.ca_status, row.identity_status) == ("available", "available")
        (identity,) = h.certificates(tp.id)
        assert len(h.certificates(tp.id, role=None)) == 2  # identity and CA: the same self-signed certificate
        on_device = h.on_device(device, "vpn").json()
        assert {c["pem"] for c in on_device["certificates"]} == {identity.pem}
    assert len(jobs) == 10


def test_transient_device_errors_are_retried_until_every_enrollment_succeeds(make_harness):
    h = make_harness(sim=SimConfig(devices=20, seed=11, error_rate=0.25), job_max_attempts=10)
    devices = h.register_fleet()
    trustpoints = h.install(devices, h.enrollment_object("vpn"))
    retries_before = metric("certfleet_job_retries_total", kind="enroll", code="device_error")
    jobs = h.wait([h.submit("enroll", tp) for tp in trustpoints])

    assert {j.state for j in jobs.values()} == {"succeeded"}
    assert all(1 <= j.attempts <= 10 for j in jobs.values())
    retried = [j for j in jobs.values() if j.attempts > 1]
    assert retried, "with a 25% error rate some enrollment must have needed a retry"
    for job in retried:
        retry_steps = [s for s in job.steps if s["step"] == "retry_scheduled"]
        assert len(retry_steps) == job.attempts - 1
        assert all(s["detail"].startswith("device_error: device FTD-") for s in retry_steps)
        assert job.error_code is None  # cleared by the success
    # Every injected fault cost exactly one attempt, and was counted.
    total_retries = sum(j.attempts - 1 for j in jobs.values())
    assert total_retries == h.sim.sim.fault_counts["error"]
    retries_after = metric("certfleet_job_retries_total", kind="enroll", code="device_error")
    assert retries_after == retries_before + total_retries
    for tp in trustpoints:
        assert h.trustpoint(tp.id).identity_status == "available"
        assert len(h.certificates(tp.id)) == 1


def test_unreachable_devices_fail_after_the_last_attempt_with_a_readable_message(make_harness):
    h = make_harness(sim=SimConfig(devices=12, seed=21, unreachable_rate=0.25), job_max_attempts=3)
    fleet = h.register_fleet()
    port = free_port()
    gone = h.add(Device(domain_id=GLOBAL_DOMAIN_ID, name="ftd-gone", serial="FTD-990001",
                        management_url=f"http://127.0.0.1:{port}/api/devices/FTD-990001"))[0]
    devices = [*fleet, gone]
    trustpoints = h.install(devices, h.enrollment_object("vpn"))
    jobs = h.wait([h.submit("enroll", tp) for tp in trustpoints])
    job_for = {}
    for device, tp in zip(devices, trustpoints, strict=True):
        job_for[device.serial] = next(j for j in jobs.values() if j.trustpoint_id == tp.id)

    refused = job_for["FTD-990001"]
    assert (refused.state, refused.attempts, refused.error_code) == ("failed", 3, "device_unreachable")
    assert refused.error_message == (
        f"device FTD-990001 unreachable after 3 attempts: connection refused "
        f"(http://127.0.0.1:{port}/api/devices/FTD-990001)"
    )
    assert step_names(refused).count("retry_scheduled") == 2 and step_names(refused)[-1] == "failed"
    row = h.trustpoint(trustpoints[-1].id)
    assert (row.ca_status, row.identity_status) == ("failed", "failed")
    assert (row.error_code, row.error_message) == ("device_unreachable", refused.error_message)

    unreachable = [d.serial for d in fleet if h.sim.sim.faults.is_unreachable(d.serial)]
    assert unreachable, "the seed should make some simulated devices unreachable"
    for device in fleet:
        job = job_for[device.serial]
        if device.serial in unreachable:
            assert (job.state, job.attempts, job.error_code) == ("failed", 3, "device_unreachable")
            assert job.error_message.startswith(f"device {device.serial} unreachable after 3 attempts: ")
            assert device.management_url in job.error_message
        else:
            assert (job.state, job.attempts) == ("succeeded", 1)


def test_weak_key_without_weak_crypto_fails_at_once_and_with_it_enrolls(make_harness):
    h = make_harness(sim=SimConfig(devices=2, seed=5))
    strict, lenient = h.register_fleet()
    with session_scope(h.engine) as session:
        row = session.get(Device, lenient.id)
        row.weak_crypto = True  # the operator enabled weak-crypto on this device
        session.add(row)
        session.commit()
    obj = h.enrollment_object("legacy-rsa", key_type="rsa", key_size=1024)
    refused_tp, accepted_tp = h.install([strict, lenient], obj)
    failed_before = metric("certfleet_enrollments_total", method="self_signed", outcome="failed")
    by_code_before = metric("certfleet_enrollment_failures_total", method="self_signed", code="weak_crypto")
    jobs = h.wait([refused := h.submit("enroll", refused_tp), accepted := h.submit("enroll", accepted_tp)])

    job = jobs[refused]
    assert (job.state, job.attempts, job.error_code) == ("failed", 1, "weak_crypto")
    assert "RSA-1024" in job.error_message and "enable weak-crypto on the device" in job.error_message
    row = h.trustpoint(refused_tp.id)
    assert (row.ca_status, row.identity_status, row.error_code) == ("failed", "failed", "weak_crypto")
    assert row.error_message == job.error_message
    assert h.certificates(refused_tp.id) == []
    assert metric("certfleet_enrollments_total", method="self_signed", outcome="failed") == failed_before + 1
    # The dashboard's failures by method and code.
    assert metric("certfleet_enrollment_failures_total", method="self_signed", code="weak_crypto") == by_code_before + 1

    assert jobs[accepted].state == "succeeded"
    (identity,) = h.certificates(accepted_tp.id)
    assert (identity.key_algorithm, identity.key_size) == ("RSA", 1024)


def test_a_job_cut_off_by_its_time_limit_is_released_retried_and_bounded(make_harness):
    # A one-second lease is also the actor's time limit; the device takes well over that (the limit is
    # checked about once a second, and a request blocked on the network is cut off when it returns).
    h = make_harness(sim=SimConfig(devices=1, seed=12, latency_ms=2500), job_lease_seconds=1,
                     job_max_attempts=1)
    (tp,) = h.install(h.register_fleet(), h.enrollment_object("vpn"))
    job = h.wait([job_id := h.submit("enroll", tp)], timeout=30)[job_id]

    # Dramatiq's retry found the job released and claimed it again; past the attempt limit it
    # fails with a message instead of looping.
    released = [s for s in job.steps if s["step"] == "released"]
    assert released and released[0]["detail"] == (
        "unexpected TimeLimitExceeded; the job will be tried again"
    )
    assert (job.state, job.error_code) == ("failed", "attempts_exhausted")
    # Bounded: the first attempt, the retry that finds the limit spent, and on a loaded machine
    # perhaps one more claim of the released job before that retry lands; never a loop.
    assert 2 <= job.attempts <= 3, job.steps
    assert job.error_message.startswith("gave up after 1 attempt: the workers running this job stopped")
    assert h.trustpoint(tp.id).identity_status == "failed"


# --- re-enroll, refresh, delete -----------------------------------------------------------------

def enrolled(h: Harness, count: int) -> tuple[list[Device], list[Trustpoint]]:
    devices = h.register_fleet()[:count]
    trustpoints = h.install(devices, h.enrollment_object("vpn"))
    jobs = h.wait([h.submit("enroll", tp) for tp in trustpoints])
    assert {j.state for j in jobs.values()} == {"succeeded"}
    return devices, trustpoints


def test_re_enroll_replaces_the_certificate_with_a_new_key(make_harness):
    h = make_harness(sim=SimConfig(devices=3, seed=6))
    devices, trustpoints = enrolled(h, 3)
    before = {tp.id: h.certificates(tp.id)[0] for tp in trustpoints}
    jobs = h.wait([h.submit("re_enroll", tp) for tp in trustpoints])

    assert {j.state for j in jobs.values()} == {"succeeded"}
    assert all(step_names(j) == ["requested", "claimed", "configured", "re_enroll", "installed"]
               for j in jobs.values())
    for device, tp in zip(devices, trustpoints, strict=True):
        (after,) = h.certificates(tp.id)
        old, new = load_cert(before[tp.id].pem), load_cert(after.pem)
        assert new.serial_number != old.serial_number
        assert new.public_key() != old.public_key()
        assert after.job_id in jobs
        row = h.trustpoint(tp.id)
        assert (row.ca_status, row.identity_status) == ("available", "available")
        on_device = h.on_device(device, "vpn").json()
        assert {c["pem"] for c in on_device["certificates"]} == {after.pem}


def test_refresh_shows_what_the_device_has(make_harness):
    h = make_harness(sim=SimConfig(devices=2, seed=7))
    (kept_device, lost_device), (kept, lost) = enrolled(h, 2)
    kept_cert = h.certificates(kept.id)[0]
    # Someone removed the trustpoint on the device itself.
    assert h.http.delete(f"{lost_device.management_url}/trustpoints/vpn").status_code == 204
    jobs = h.wait([h.submit("refresh", kept), h.submit("refresh", lost)])

    assert {j.state for j in jobs.values()} == {"succeeded"}
    row = h.trustpoint(kept.id)
    assert (row.ca_status, row.identity_status) == ("available", "available")
    assert [c.id for c in h.certificates(kept.id)] == [kept_cert.id]  # unchanged, so not rewritten
    row = h.trustpoint(lost.id)
    assert (row.ca_status, row.identity_status, row.error_code) == ("failed", "failed", "trustpoint_missing")
    assert row.error_message == (
        f"trustpoint vpn is no longer on device {lost_device.serial}; re-enroll it to install it again"
    )
    assert h.certificates(lost.id, role=None) == []

    # Re-enrolling, as the message says, brings it back.
    job = h.wait([job_id := h.submit("re_enroll", lost)])[job_id]
    assert job.state == "succeeded" and h.trustpoint(lost.id).identity_status == "available"


def test_delete_removes_the_trustpoint_from_device_and_database(make_harness):
    h = make_harness(sim=SimConfig(devices=2, seed=8))
    (device, other_device), (tp, other) = enrolled(h, 2)
    job = h.wait([job_id := h.submit("delete", tp)])[job_id]

    assert job.state == "succeeded"
    assert step_names(job) == ["requested", "claimed", "deleted_on_device", "deleted"]
    assert h.on_device(device, "vpn").json()["code"] == "trustpoint_not_found"
    assert h.trustpoint(tp.id) is None and h.certificates(tp.id, role=None) == []
    assert h.trustpoint(other.id).identity_status == "available"  # nothing else touched
    assert h.on_device(other_device, "vpn").status_code == 200

    # Deleting what is already gone counts as done.
    again = h.wait([job_id := h.submit("delete", tp)])[job_id]
    assert again.state == "succeeded"


# --- logs ---------------------------------------------------------------------------------------

class JsonLogs:
    """The real JSON logging, rendered to stderr and read back."""

    def __init__(self, capsys) -> None:
        self._capsys = capsys

    def start(self) -> None:
        # Called in the test, not the fixture: pytest swaps sys.stderr between setup and call.
        configure_logging("INFO", "json")

    def read(self) -> tuple[str, list[dict]]:
        err = self._capsys.readouterr().err
        return err, [json.loads(line) for line in err.splitlines() if line.startswith("{")]


@pytest.fixture
def json_logs(capsys):
    saved = structlog.get_config()
    yield JsonLogs(capsys)
    structlog.contextvars.clear_contextvars()
    structlog.configure(**saved)


def test_logs_name_the_job_and_never_a_secret(make_harness, json_logs):
    h = make_harness(sim=SimConfig(devices=2, seed=9), job_max_attempts=2)
    json_logs.start()
    good, other = h.register_fleet()
    gone = h.add(Device(domain_id=GLOBAL_DOMAIN_ID, name="ftd-gone", serial="FTD-990002",
                        management_url=f"http://127.0.0.1:{free_port()}/api/devices/FTD-990002"))[0]
    ok_tp, gone_tp = h.install([good, gone], h.enrollment_object("vpn"))
    # An EST object: its password is decrypted into the configuration pushed to the device.
    sealed = SecretBox(h.settings.secret_key).seal(SECRET.encode())
    est = h.enrollment_object("vpn-est", enrollment_type="est", enrollment_url="https://127.0.0.1:9/est",
                              username="enroller", secret_blob=sealed)
    (est_tp,) = h.install([other], est)
    ok_id, gone_id, est_id = h.submit("enroll", ok_tp), h.submit("enroll", gone_tp), h.submit("enroll", est_tp)
    jobs = h.wait([ok_id, gone_id, est_id])
    h.drain()

    text, records = json_logs.read()
    assert SECRET not in text and "PRIVATE KEY" not in text
    for job in jobs.values():
        assert SECRET not in json.dumps(job.steps) + (job.error_message or "")
    with session_scope(h.engine) as session:
        assert all(SECRET not in (tp.error_message or "") for tp in session.exec(select(Trustpoint)).all())
    succeeded = [r for r in records if r.get("event") == "job succeeded"]
    assert str(ok_id) in [r["job_id"] for r in succeeded]
    ok_line = next(r for r in succeeded if r["job_id"] == str(ok_id))
    assert (ok_line["actor"], ok_line["queue"]) == ("enroll_trustpoint", JOBS_QUEUE) and ok_line["message_id"]
    retried = [r for r in records if r.get("event") == "job will be retried"]
    failed = [r for r in records if r.get("event") == "job failed" and r["job_id"] == str(gone_id)]
    # The EST device finds no CA on port 9 (connection refused): retried too, its password never shown.
    assert sorted(r["job_id"] for r in retried) == sorted([str(gone_id), str(est_id)])
    assert [r["code"] for r in failed] == ["device_unreachable"]
    assert failed[0]["level"] == "warning" and "FTD-990002" in failed[0]["error"]
