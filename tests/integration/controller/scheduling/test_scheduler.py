"""The scheduler against a real database (SQLite, and PostgreSQL where marked), the in-process
broker and a ManualClock: leadership among controllers, runs that are neither lost nor repeated,
and the renewal pass publishing each due trustpoint's renewal once."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import insert
from sqlmodel import Session, select

from services.controller.scheduling import lease
from services.controller.scheduling.renewal_pass import run_renewal_pass
from services.controller.scheduling.scheduler import Scheduler
from services.controller.scheduling.schedules import ScheduleSpec, default_schedules
from services.controller.scheduling.timing import Timing
from shared.events import BULK_QUEUE
from shared.models import GLOBAL_DOMAIN_ID, Device, EnrollmentObject, Job, LeaderLease, Schedule, Trustpoint
from shared.settings import Settings
from tests.support.clock import ManualClock
from tests.support.jobs import drain

ON_BOTH = pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

SETTINGS = Settings(renewal_interval_seconds=60, scheduler_lease_seconds=15, scheduler_tick_seconds=1)


class Fleet:
    """Trustpoints written straight into the tables, with the renewal times a test wants."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.objects: dict[tuple[str, bool], uuid.UUID] = {}

    def object_id(self, method: str, auto_renew: bool = True) -> uuid.UUID:
        key = (method, auto_renew)
        if key not in self.objects:
            obj = EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name=f"vpn-{method}-{auto_renew}",
                                   enrollment_type=method, auto_renew=auto_renew)
            with Session(self.engine) as session:
                session.add(obj)
                session.commit()
                self.objects[key] = obj.id
        return self.objects[key]

    def add(self, count: int, *, due_at, method: str = "est", auto_renew: bool = True) -> list[uuid.UUID]:
        object_id = self.object_id(method, auto_renew)
        devices, trustpoints = [], []
        for _ in range(count):
            device_id = uuid.uuid4()
            devices.append(dict(id=device_id, domain_id=GLOBAL_DOMAIN_ID, name=f"fw-{device_id.hex[:8]}",
                                serial=device_id.hex[:16], management_url="http://127.0.0.1:9/api/devices/x",
                                model="", ip_address="", fqdn="", weak_crypto=False, created_at=due_at))
            trustpoints.append(dict(
                id=uuid.uuid4(), device_id=device_id, domain_id=GLOBAL_DOMAIN_ID, enrollment_object_id=object_id,
                name=f"vpn-{method}-{auto_renew}", enrollment_type=method, ca_status="available",
                identity_status="available", renewal_due_at=due_at, renewal_failures=0,
                created_at=due_at, updated_at=due_at))
        with Session(self.engine) as session:
            session.execute(insert(Device), devices)
            session.execute(insert(Trustpoint), trustpoints)
            session.commit()
        return [tp["id"] for tp in trustpoints]

    def renewal_jobs(self) -> list[Job]:
        with Session(self.engine) as session:
            return list(session.exec(select(Job).where(Job.reason == "renewal")).all())


def scheduler(engine, broker, clock, holder: str, **settings) -> Scheduler:
    """A scheduler running the renewal schedule alone."""
    settings = replace(SETTINGS, **settings)
    renewal = [spec for spec in default_schedules(settings) if spec.name == "renewal"]
    return Scheduler(engine, broker, settings, specs=renewal, clock=clock, holder=holder)


@ON_BOTH
def test_the_renewal_pass_publishes_each_due_trustpoint_once_on_the_bulk_queue(db_engine, stub_broker):
    clock, fleet = ManualClock(), Fleet(db_engine)
    now = clock()
    due = fleet.add(5, due_at=now - timedelta(minutes=5)) + fleet.add(3, due_at=now, method="self_signed")
    later = fleet.add(4, due_at=now + timedelta(days=30))
    manual = fleet.add(2, due_at=now - timedelta(days=1), method="manual")
    switched_off = fleet.add(2, due_at=now - timedelta(days=1), auto_renew=False)
    busy = fleet.add(1, due_at=now - timedelta(days=1))
    with Session(db_engine) as session:
        session.add(Job(kind="refresh", trustpoint_id=busy[0], device_id=uuid.uuid4(), domain_id=GLOBAL_DOMAIN_ID,
                        trustpoint_name="vpn", state="running"))
        session.commit()

    with Session(db_engine) as session:
        result = run_renewal_pass(session, stub_broker, now=now, settings=SETTINGS, page=3)
    assert (result.published, result.busy) == (8, 1)
    assert result.describe() == "8 renewals published, 1 busy trustpoint left for the next pass"
    jobs = fleet.renewal_jobs()
    assert sorted(j.trustpoint_id for j in jobs) == sorted(due)
    assert {(j.kind, j.state, j.batch_id) for j in jobs} == {("re_enroll", "queued", None)}
    assert sorted(m.args[0] for m in drain(stub_broker, BULK_QUEUE)) == sorted(str(j.id) for j in jobs)
    with Session(db_engine) as session:
        renewing = session.exec(select(Trustpoint).where(Trustpoint.id.in_(due))).all()
        assert {tp.renewal_due_at for tp in renewing} == {None}  # claimed: not due again while out
        left = session.exec(select(Trustpoint.id).where(Trustpoint.renewal_due_at.is_not(None))).all()
        assert set(left) == {*later, *manual, *switched_off, *busy}

    # A second pass, by whoever runs it, finds nothing more to publish.
    with Session(db_engine) as session:
        again = run_renewal_pass(session, stub_broker, now=now + timedelta(seconds=1), settings=SETTINGS)
    assert (again.published, again.busy) == (0, 1)
    assert len(fleet.renewal_jobs()) == 8


@ON_BOTH
def test_of_two_controllers_one_leads_and_only_it_fires(db_engine, stub_broker):
    clock, fleet = ManualClock(), Fleet(db_engine)
    fleet.add(10, due_at=clock() - timedelta(seconds=1))
    a, b = scheduler(db_engine, stub_broker, clock, "a"), scheduler(db_engine, stub_broker, clock, "b")

    first = a.tick() + b.tick()
    assert [(r.schedule, r.outcome, r.detail) for r in first] == [("renewal", "succeeded", "10 renewals published")]
    assert (a.leadership is not None, b.leadership is None) == (True, True)

    fleet.add(5, due_at=clock() + timedelta(seconds=30))
    for _ in range(70):  # seventy seconds, both ticking each second
        clock.advance(1)
        a.tick()
        b.tick()
    assert b.leadership is None
    assert len(fleet.renewal_jobs()) == 15  # each due trustpoint once, by the leader
    with Session(db_engine) as session:
        row = session.get(Schedule, "renewal")
        assert row.last_outcome == "succeeded" and row.next_run_at > clock()


@ON_BOTH
def test_when_the_leader_dies_another_takes_over_within_one_lease_and_its_unfinished_run_is_not_repeated(
        db_engine, stub_broker):
    clock = ManualClock()
    calls: list[str] = []

    class Killed(BaseException):
        """The process ends in the middle of the run (kill -9): nothing after this point happens."""

    def run(ctx) -> str:
        calls.append(ctx.now.isoformat())
        if len(calls) == 2:
            raise Killed
        return "ran"

    specs = [ScheduleSpec("audit", Timing(interval_seconds=60), run)]
    a = Scheduler(db_engine, stub_broker, SETTINGS, specs=specs, clock=clock, holder="a")
    b = Scheduler(db_engine, stub_broker, SETTINGS, specs=specs, clock=clock, holder="b")
    a.tick()
    b.tick()
    assert len(calls) == 1
    clock.advance(60)
    with pytest.raises(Killed):  # a claims its next run and dies in it
        a.tick()
    assert len(calls) == 2

    # b takes over once a's lease has run out, not before.
    clock.advance(SETTINGS.scheduler_lease_seconds - 1)
    assert b.tick() == [] and b.leadership is None
    clock.advance(2)
    records = b.tick()
    assert b.leadership is not None and b.leadership.token == 2
    assert [(r.schedule, r.outcome) for r in records] == [("audit", "interrupted")]
    assert len(calls) == 2  # the interrupted run is not run again ...
    clock.advance(60)
    assert [(r.schedule, r.outcome) for r in b.tick()] == [("audit", "succeeded")]  # ... the next one runs
    assert len(calls) == 3

    # The old leader comes back: it has lost the lease and fires nothing.
    assert a.tick() == [] and a.leadership is None
    with Session(db_engine) as session:
        held = session.get(LeaderLease, lease.SCHEDULER)
        assert (held.holder, held.token) == ("b", 2)


@ON_BOTH
def test_a_leader_that_stalled_past_its_lease_writes_nothing_once_another_took_over(db_engine, stub_broker):
    clock, fleet = ManualClock(), Fleet(db_engine)
    due = fleet.add(3, due_at=clock())
    a, b = scheduler(db_engine, stub_broker, clock, "a"), scheduler(db_engine, stub_broker, clock, "b")
    with Session(db_engine) as session:
        stale = lease.acquire(session, name=lease.SCHEDULER, holder="a", now=clock(), lease_seconds=15)
    clock.advance(20)  # a stalls (a long GC pause, a frozen VM) past its lease
    with Session(db_engine) as session:
        assert lease.acquire(session, name=lease.SCHEDULER, holder="b", now=clock(), lease_seconds=15)

    with Session(db_engine) as session, pytest.raises(lease.LeadershipLost):
        run_renewal_pass(session, stub_broker, now=clock(), settings=SETTINGS,
                         fence=lambda s: lease.fence(s, stale, now=clock(), lease_seconds=15))
    assert fleet.renewal_jobs() == []  # a's page was rolled back whole
    with Session(db_engine) as session:
        assert all(session.get(Trustpoint, tp).renewal_due_at is not None for tp in due)
    del a, b


def test_after_downtime_a_missed_run_runs_once_at_start_up(sqlite_engine, stub_broker):
    clock = ManualClock()
    calls: list[str] = []
    specs = [ScheduleSpec("hourly", Timing(interval_seconds=3600), lambda ctx: calls.append("run") or "ran")]
    first = Scheduler(sqlite_engine, stub_broker, SETTINGS, specs=specs, clock=clock, holder="a")
    first.tick()
    first.stop()  # a clean stop gives the lease up
    clock.advance(10 * 3600 + 300)  # ten runs missed

    restarted = Scheduler(sqlite_engine, stub_broker, SETTINGS, specs=specs, clock=clock, holder="c")
    for _ in range(5):
        restarted.tick()
        clock.advance(1)
    assert calls == ["run", "run"]
    with Session(sqlite_engine) as session:
        assert session.get(Schedule, "hourly").next_run_at > clock() + timedelta(minutes=59)


def test_a_restart_does_not_repeat_a_run(sqlite_engine, stub_broker):
    clock = ManualClock()
    calls: list[str] = []
    specs = [ScheduleSpec("hourly", Timing(interval_seconds=3600), lambda ctx: calls.append("run") or "ran")]
    Scheduler(sqlite_engine, stub_broker, SETTINGS, specs=specs, clock=clock, holder="a").tick()
    clock.advance(5)
    Scheduler(sqlite_engine, stub_broker, SETTINGS, specs=specs, clock=clock, holder="a").tick()
    assert calls == ["run"]


def test_a_failing_run_is_recorded_and_the_scheduler_goes_on(sqlite_engine, stub_broker):
    clock = ManualClock()

    def broken(ctx) -> str:
        raise RuntimeError("the CA bundle server answered 503")

    specs = [ScheduleSpec("bundle", Timing(interval_seconds=60), broken)]
    s = Scheduler(sqlite_engine, stub_broker, SETTINGS, specs=specs, clock=clock, holder="a")
    assert [(r.outcome, r.detail) for r in s.tick()] == [("failed", "RuntimeError: the CA bundle server answered 503")]
    clock.advance(60)
    assert [r.outcome for r in s.tick()] == ["failed"]
    with Session(sqlite_engine) as session:
        row = session.get(Schedule, "bundle")
        assert (row.last_outcome, row.run_id) == ("failed", None)


@ON_BOTH
def test_a_schedule_switched_off_while_an_earlier_one_of_the_same_tick_runs_does_not_run(db_engine, stub_broker):
    # A tick reads which schedules are due once, then runs them one after the other: an admin who
    # switches one off meanwhile (here: during the run before it) is obeyed.
    clock = ManualClock()
    calls: list[str] = []

    def switch_off_the_next(ctx) -> str:
        calls.append("first")
        with Session(db_engine) as admin:
            admin.get(Schedule, "second").enabled = False
            admin.commit()
        return "switched the second off"

    specs = [ScheduleSpec("first", Timing(interval_seconds=60), switch_off_the_next),
             ScheduleSpec("second", Timing(interval_seconds=60), lambda ctx: calls.append("second") or "ran")]
    s = Scheduler(db_engine, stub_broker, SETTINGS, specs=specs, clock=clock, holder="a")
    assert [r.schedule for r in s.tick()] == ["first"]
    clock.advance(120)
    assert [r.schedule for r in s.tick()] == ["first"]
    assert calls == ["first", "first"]
    with Session(db_engine) as session:
        assert session.get(Schedule, "second").last_run_at is None
