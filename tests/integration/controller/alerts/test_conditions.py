"""Each alert condition on a real database (SQLite, and PostgreSQL where marked), raised and
cleared as the facts change: an expired keyring and its regeneration, a certificate expiring,
escalating, expiring and being renewed, a revoked or failed trustpoint, failed renewals, a CA
whose circuit opens and closes in the CA gate (in Redis, database 0, under this module's own
key prefix), a failed CA-bundle update and a good one; and the pass run by the scheduler."""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
import redis
from sqlalchemy import text
from sqlmodel import Session, select

from services.controller.alerts import conditions
from services.controller.alerts.conditions import run_alert_conditions
from services.controller.scheduling.scheduler import Scheduler
from services.controller.scheduling.schedules import default_schedules
from services.worker.ca_gate import CIRCUIT_THRESHOLD, CaLimits, MemoryCaGate
from services.worker.ca_gate_redis import RedisCaGate
from shared.ca_circuits import GATE_PREFIX, RedisCircuits
from shared.enums import AlertCode
from shared.models import GLOBAL_DOMAIN_ID, Alert, AlertEvent, CaBundleUpdate, Device, Trustpoint
from shared.settings import Settings
from tests.support import alert_rows as rows
from tests.support.clock import ManualClock

ON_BOTH = pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
SETTINGS = Settings(alert_expiring_days=30, alert_conditions_seconds=30)
#: Database 0 is shared: this module only touches keys under its own prefix and never flushes
#: (named so, not REDIS_URL, which says a module owns a database and may flush it).
ALERTS_REDIS_URL = "redis://127.0.0.1:6379/0"
KEY_PREFIX = "test-alertsc:"
CA = "https://ca.example.com:8443"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def run(engine, clock, circuits=None, settings=SETTINGS) -> str:
    with Session(engine) as session:
        return run_alert_conditions(session, now=clock(), settings=settings, circuits=circuits)


def open_alerts(engine, code: AlertCode | None = None) -> list[Alert]:
    with Session(engine) as session:
        query = select(Alert).where(Alert.state != "cleared")
        if code is not None:
            query = query.where(Alert.code == code.value)
        return list(session.exec(query.order_by(Alert.device_name, Alert.resource)).all())


def changes(engine, alert_id) -> list[str]:
    with Session(engine) as session:
        return [e.type.rsplit(".", 1)[1] for e in session.exec(
            select(AlertEvent).where(AlertEvent.alert_id == alert_id).order_by(AlertEvent.seq)).all()]


# --- device keyrings (F0853) ----------------------------------------------------------------------


@ON_BOTH
def test_an_invalid_keyring_raises_f0853_until_it_is_regenerated(db_engine, clock):
    branch = rows.domain(db_engine, "Branch")
    expired = rows.device(db_engine, "fw-expired", domain_id=branch, keyring_valid=False, keyring_reason="expired")
    rows.device(db_engine, "fw-never-read")  # keyring_valid None: nothing known, nothing raised
    rows.device(db_engine, "fw-valid", keyring_valid=True)
    assert run(db_engine, clock).startswith("alerts: 1 raised, 0 updated, 0 cleared, 0 unchanged")
    [alert] = open_alerts(db_engine)
    assert (alert.code, alert.severity, alert.description) == (
        "F0853", "major", "default Keyring's certificate is invalid, reason: expired")
    assert (alert.device_id, alert.device_name, alert.domain_id) == (expired.id, "fw-expired", branch)

    clock.advance(30)
    run(db_engine, clock)
    assert [a.id for a in open_alerts(db_engine)] == [alert.id]  # still one
    rows.update(db_engine, Device, expired.id, keyring_valid=True, keyring_reason=None)  # regenerated
    run(db_engine, clock)
    assert open_alerts(db_engine) == [] and changes(db_engine, alert.id) == ["raised", "cleared"]


# --- certificates ---------------------------------------------------------------------------------


@ON_BOTH
def test_an_expiring_certificate_warns_escalates_expires_and_a_renewal_clears_it(db_engine, clock):
    dev = rows.device(db_engine, "fw-1")
    tp = rows.trustpoint(db_engine, dev, "vpn")
    rows.identity(db_engine, tp, not_after=clock() + timedelta(days=20))
    far = rows.trustpoint(db_engine, dev, "mgmt")
    rows.identity(db_engine, far, not_after=clock() + timedelta(days=60))  # beyond the 30 days

    run(db_engine, clock)
    [alert] = open_alerts(db_engine)
    assert (alert.code, alert.severity, alert.trustpoint_id, alert.trustpoint_name, alert.device_name) == (
        "CF-CERT-EXPIRING", "warning", tp.id, "vpn", "fw-1")
    assert "trustpoint vpn on device fw-1 expires in under 30 days, on 2030-01-21 12:00 UTC" in alert.description
    assert alert.description.endswith("re-enroll it: certfleet trustpoint re-enroll fw-1 vpn")

    clock.advance(86400)  # a day later: same band, no event
    run(db_engine, clock)
    assert changes(db_engine, alert.id) == ["raised"]
    clock.advance(12 * 86400)  # 7 days left: major
    run(db_engine, clock)
    [escalated] = open_alerts(db_engine)
    assert (escalated.id, escalated.severity) == (alert.id, "major")
    assert "expires in under 7 days" in escalated.description
    assert changes(db_engine, alert.id) == ["raised", "updated"]

    clock.advance(8 * 86400)  # ended
    run(db_engine, clock)
    [expired] = open_alerts(db_engine)
    assert (expired.code, expired.severity, expired.trustpoint_id) == ("CF-CERT-EXPIRED", "critical", tp.id)
    assert "expired on 2030-01-21 12:00 UTC" in expired.description
    assert changes(db_engine, alert.id) == ["raised", "updated", "cleared"]

    rows.identity(db_engine, tp, not_after=clock() + timedelta(days=365))  # renewed: a new certificate row
    run(db_engine, clock)
    assert open_alerts(db_engine) == []
    assert changes(db_engine, expired.id) == ["raised", "cleared"]


@ON_BOTH
def test_a_revoked_certificate_raises_until_the_trustpoint_has_a_good_one(db_engine, clock):
    dev = rows.device(db_engine, "fw-1")
    tp = rows.trustpoint(db_engine, dev, "vpn", identity_status="revoked", revoked_at=clock() - timedelta(hours=1),
                         revocation_reason="keyCompromise")
    rows.trustpoint(db_engine, dev, "other")
    run(db_engine, clock)
    [alert] = open_alerts(db_engine)
    assert (alert.code, alert.severity, alert.trustpoint_id) == ("CF-CERT-REVOKED", "critical", tp.id)
    assert ("the CA revoked the identity certificate of trustpoint vpn on device fw-1 on 2030-01-01 11:00 UTC "
            "(reason: keyCompromise)") in alert.description
    rows.update(db_engine, Trustpoint, tp.id, identity_status="available", revoked_at=None, revocation_reason=None)
    run(db_engine, clock)
    assert open_alerts(db_engine) == []


# --- enrollments and renewals ---------------------------------------------------------------------


@ON_BOTH
def test_a_failed_enrollment_raises_with_its_error_and_clears_on_success_or_deletion(db_engine, clock):
    dev = rows.device(db_engine, "fw-1")
    identity = rows.trustpoint(db_engine, dev, "vpn", identity_status="failed", error_code="ca_refused",
                               error_message="the CA refused the request: unknown user")
    ca_only = rows.trustpoint(db_engine, dev, "root", method="manual", ca_status="failed",
                              identity_status="not_applicable", error_code="bad_fingerprint",
                              error_message="x" * 2048)
    rows.trustpoint(db_engine, dev, "fine")
    run(db_engine, clock)
    failed = {a.trustpoint_name: a for a in open_alerts(db_engine)}
    assert set(failed) == {"vpn", "root"} and {a.code for a in failed.values()} == {"CF-ENROLL-FAILED"}
    assert ("the identity certificate of trustpoint vpn on device fw-1 failed: ca_refused: the CA refused the "
            "request: unknown user. Fix the cause, then re-enroll it") in failed["vpn"].description
    assert failed["root"].description.startswith("the CA certificate of trustpoint root on device fw-1 failed: "
                                                  "bad_fingerprint: xxx")
    assert len(failed["root"].description) <= 1024 and "certfleet trustpoint csr" in failed["root"].description

    rows.update(db_engine, Trustpoint, identity.id, identity_status="available", error_code=None, error_message=None)
    rows.remove_trustpoint(db_engine, ca_only)
    run(db_engine, clock)
    assert open_alerts(db_engine) == []


@ON_BOTH
def test_failed_renewals_raise_until_a_renewal_succeeds(db_engine, clock):
    dev = rows.device(db_engine, "fw-1")
    # The failed renewal also marked the trustpoint failed: it is one alert, the renewal's.
    tp = rows.trustpoint(db_engine, dev, "vpn", renewal_failures=1, renewal_error_code="ca_unavailable",
                         renewal_error_message="the CA did not answer", renewal_due_at=clock() + timedelta(hours=1),
                         identity_status="failed", error_code="ca_unavailable")
    run(db_engine, clock)
    [alert] = open_alerts(db_engine)
    assert (alert.code, alert.severity, alert.trustpoint_id) == ("CF-RENEW-FAILED", "major", tp.id)
    assert ("failed 1 time(s) in a row, last: ca_unavailable: the CA did not answer; certfleet tries again at "
            "2030-01-01 13:00 UTC;") in alert.description
    rows.update(db_engine, Trustpoint, tp.id, renewal_failures=2)
    run(db_engine, clock)
    assert "failed 2 time(s)" in open_alerts(db_engine)[0].description
    assert changes(db_engine, alert.id) == ["raised", "updated"]
    rows.update(db_engine, Trustpoint, tp.id, renewal_failures=0, renewal_error_code=None, renewal_error_message=None,
                identity_status="available", error_code=None)
    run(db_engine, clock)
    assert open_alerts(db_engine) == []


# --- CA endpoints ---------------------------------------------------------------------------------


def fail(gate, endpoint: str, times: int = CIRCUIT_THRESHOLD) -> None:
    for _ in range(times):
        gate.finish(endpoint, "", outcome="down", cap_ms=60_000, jitter=0)


@pytest.fixture
def redis_gate(clock):
    client = redis.Redis.from_url(ALERTS_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and Redis is unreachable: {exc}")
        pytest.skip(f"Redis is unreachable: {exc}")
    prefix = f"{KEY_PREFIX}ca:{uuid.uuid4().hex}"
    gate = RedisCaGate(client, prefix=prefix, clock_ms=clock.ms)
    yield gate
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.redis
@ON_BOTH
def test_a_ca_whose_circuit_opens_is_unreachable_until_it_closes(db_engine, clock, redis_gate):
    other = "https://[2001:db8::5]:443"
    fail(redis_gate, CA)
    fail(redis_gate, other, CIRCUIT_THRESHOLD - 1)  # failing, not yet open
    down_at = clock()
    assert redis_gate.open_circuits() == {CA: clock.ms()}
    run(db_engine, clock, redis_gate)
    [alert] = open_alerts(db_engine)
    assert (alert.code, alert.severity, alert.domain_id, alert.resource, alert.device_id) == (
        "CF-CA-UNREACHABLE", "major", GLOBAL_DOMAIN_ID, CA, None)
    assert alert.description.startswith(f"the CA at {CA} has been unavailable since {down_at:%Y-%m-%d %H:%M} UTC")

    clock.advance(120)  # the open period is over, no probe succeeded yet: still down
    fail(redis_gate, other, 1)
    run(db_engine, clock, RedisCircuits(redis_gate.client, prefix=redis_gate.prefix))  # the controller's reader
    assert [a.resource for a in open_alerts(db_engine)] == [other, CA]

    probe = redis_gate.acquire(CA, CaLimits(concurrency=10, rate_per_second=1000), lease_ms=60_000)
    assert probe.granted
    redis_gate.finish(CA, probe.token, outcome="ok", cap_ms=60_000, jitter=0)  # the CA is back
    run(db_engine, clock, redis_gate)
    assert [a.resource for a in open_alerts(db_engine)] == [other]
    assert changes(db_engine, alert.id) == ["raised", "cleared"]


def test_the_gate_in_memory_names_its_open_circuits_as_redis_does(clock):
    gate = MemoryCaGate(clock_ms=clock.ms)
    fail(gate, CA)
    fail(gate, "https://other:443", CIRCUIT_THRESHOLD - 1)
    assert gate.open_circuits() == {CA: clock.ms()}
    clock.advance(600)
    assert gate.open_circuits() == {CA: clock.ms() - 600_000}  # half-open is still down
    gate.finish(CA, "", outcome="ok", cap_ms=60_000, jitter=0)
    assert gate.open_circuits() == {}


class Unreadable:
    def open_circuits(self):
        raise redis.ConnectionError("Connection refused")


def test_a_gate_that_cannot_be_read_leaves_the_ca_alerts_as_they_are(sqlite_engine, clock):
    gate = MemoryCaGate(clock_ms=clock.ms)
    fail(gate, CA)
    run(sqlite_engine, clock, gate)
    detail = run(sqlite_engine, clock, Unreadable())
    assert detail.endswith("CA endpoints not checked (ConnectionError: Connection refused)")
    assert [a.resource for a in open_alerts(sqlite_engine)] == [CA]
    assert run(sqlite_engine, clock, None).endswith("CA endpoints not checked (no shared CA gate to read)")
    assert [a.resource for a in open_alerts(sqlite_engine)] == [CA]


def test_the_schedule_reads_the_workers_gate_at_the_broker_url():
    with conditions.gate_circuits(Settings(broker_url="")) as none:
        assert none is None
    with conditions.gate_circuits(Settings(broker_url=ALERTS_REDIS_URL)) as reader:
        assert isinstance(reader, RedisCircuits) and reader.prefix == GATE_PREFIX


# --- certfleet's CA bundle ------------------------------------------------------------------------


def bundle_update(engine, clock, action: str, outcome: str, **fields) -> None:
    with Session(engine) as session:
        session.add(CaBundleUpdate(action=action, outcome=outcome, created_at=clock(), **fields))
        session.commit()
    clock.advance(60)


@ON_BOTH
def test_a_failed_bundle_update_raises_until_a_later_one_succeeds(db_engine, clock):
    bundle_update(db_engine, clock, "run-now", "up_to_date")
    run(db_engine, clock)
    assert open_alerts(db_engine) == []
    bundle_update(db_engine, clock, "schedule", "failed_checks",
                  failed_servers=[{"server": "ldap.example.com:636", "reason": "certificate verify failed"}])
    bundle_update(db_engine, clock, "test", "checks_passed")  # a test changes nothing
    run(db_engine, clock)
    [alert] = open_alerts(db_engine)
    assert (alert.code, alert.severity, alert.domain_id, alert.resource) == (
        "CF-BUNDLE-FAILED", "minor", GLOBAL_DOMAIN_ID, "certfleet CA bundle")
    assert ("update (schedule, 2030-01-01 12:01 UTC) failed: failed_checks: ldap.example.com:636: certificate "
            "verify failed. certfleet cert-update test") in alert.description

    bundle_update(db_engine, clock, "run-now", "unreachable", detail="the bundle source did not answer")
    run(db_engine, clock)
    [still] = open_alerts(db_engine)
    assert still.id == alert.id and "unreachable: the bundle source did not answer" in still.description
    bundle_update(db_engine, clock, "run-now", "updated")
    run(db_engine, clock)
    assert open_alerts(db_engine) == [] and changes(db_engine, alert.id) == ["raised", "updated", "cleared"]


# --- the pass -------------------------------------------------------------------------------------


@ON_BOTH
def test_the_scheduler_runs_the_pass_as_the_alert_conditions_schedule(db_engine, stub_broker, clock):
    rows.device(db_engine, "fw-1", keyring_valid=False, keyring_reason="expired")
    settings = replace(SETTINGS, broker_url="", scheduler_lease_seconds=15, scheduler_tick_seconds=1)
    [spec] = [s for s in default_schedules(settings) if s.name == "alert-conditions"]
    assert spec.timing.interval_seconds == 30
    scheduler = Scheduler(db_engine, stub_broker, settings, specs=[spec], clock=clock, holder="test")
    [record] = scheduler.tick()
    assert (record.schedule, record.outcome) == ("alert-conditions", "succeeded")
    assert record.detail == ("alerts: 1 raised, 0 updated, 0 cleared, 0 unchanged; "
                             "CA endpoints not checked (no shared CA gate to read)")
    assert scheduler.tick() == []  # not due again for 30 s
    clock.advance(30)
    [again] = scheduler.tick()
    assert again.detail.startswith("alerts: 0 raised, 0 updated, 0 cleared, 1 unchanged")
    assert [a.device_name for a in open_alerts(db_engine)] == ["fw-1"]


@pytest.mark.postgres
@pytest.mark.parametrize("db_engine", ["postgres"], indirect=True)
def test_the_condition_queries_can_use_the_indexes(db_engine, clock):
    """Cheap at 50,000 devices / 100,000 trustpoints: each query reads the rows in its condition
    through an index (checked with sequential scans switched off: a plan that still scans a whole
    table has no index to use)."""
    seen: list[str] = []
    with Session(db_engine) as session:
        session.execute(text("SET enable_seqscan = off"))
        original = session.exec

        def explain(statement):
            compiled = statement.compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
            seen.append("\n".join(r[0] for r in session.execute(text(f"EXPLAIN {compiled}")).all()))
            return original(statement)

        session.exec = explain
        conditions.keyring_expired(session)
        conditions.certificates_expiring(session, now=clock(), within_days=30)
        conditions.certificates_revoked(session)
        conditions.enrollments_failed(session)
        conditions.renewals_failed(session)
        conditions.bundle_update_failed(session)
    for plan, table in zip(seen, ("device", "certificate", "trustpoint", "trustpoint", "trustpoint",
                                  "ca_bundle_update"),
                           strict=True):
        assert f"Seq Scan on {table}" not in plan, plan
