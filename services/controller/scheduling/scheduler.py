"""The scheduler: every tick, take or renew the leader lease; as the leader, fire due schedules.

A run is claimed by one conditional UPDATE that moves the schedule's next run on and records
the run as started, behind the lease's fence. So:

- a restart neither loses nor repeats a run: the schedule rows say what is due;
- after downtime a missed run fires once (the next run is counted from now);
- with several controllers only the leader fires, and a leader that lost its lease mid-run
  cannot write again (each transaction of the run passes the fence);
- a run the old leader started and did not finish is recorded as interrupted by the next leader
  and not run again: its work is idempotent, so the next regular run takes what it left.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dramatiq
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from services.controller.revocation import scan as revocation_scan
from services.controller.scheduling import lease
from services.controller.scheduling.schedules import RunContext, ScheduleSpec, installation_schedules
from services.controller.scheduling.timing import Timing, next_run_after_run
from shared.clock import utcnow
from shared.db import plain_rows
from shared.logging import get_logger
from shared.metrics import SCHEDULER_LEADER, SCHEDULER_RUNS
from shared.models import Schedule
from shared.periodic import Periodic
from shared.settings import Settings

log = get_logger(__name__)

INTERRUPTED_DETAIL = ("the controller running it stopped before it finished; not run again: the next run "
                      "takes what it left")


@dataclass(frozen=True)
class RunRecord:
    """What one run did, as recorded on its schedule."""

    schedule: str
    outcome: str  # succeeded | failed | interrupted
    detail: str


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Scheduler(Periodic):
    thread_name = "certfleet-scheduler"

    def __init__(
        self, engine: Engine, broker: dramatiq.Broker, settings: Settings, *,
        specs: list[ScheduleSpec] | None = None, clock: Callable[[], datetime] = utcnow, holder: str | None = None,
    ) -> None:
        self.engine, self.broker, self.settings, self.clock = engine, broker, settings, clock
        if specs is None:
            with Session(engine) as session:
                specs = installation_schedules(session, settings)
        self.specs = {spec.name: spec for spec in specs}
        revocation_scan.start_at_zero()  # this process's metrics show its scans from the first
        self.holder = holder or default_holder()
        self.leadership: lease.Leadership | None = None
        super().__init__(every_seconds=settings.scheduler_tick_seconds)

    # --- one tick ------------------------------------------------------------------------------

    def tick(self) -> list[RunRecord]:
        """Take or renew the lease; as the leader, fire every due schedule. Returns the runs."""
        with Session(self.engine, expire_on_commit=False) as session:
            held = lease.acquire(session, name=lease.SCHEDULER, holder=self.holder, now=self.clock(),
                                 lease_seconds=self.settings.scheduler_lease_seconds)
            previous, self.leadership = self.leadership, held
            SCHEDULER_LEADER.set(1 if held else 0)
            if held is None:
                if previous is not None:
                    log.warning("scheduler lease lost to another controller", holder=self.holder)
                return []
            records: list[RunRecord] = []
            if previous is None or previous.token != held.token:
                log.info("leading the scheduler", holder=self.holder, token=held.token)
                records += self._adopt(session, held)
            due = self._due(session)
            for spec in self.specs.values():
                if spec.name in due:
                    record = self._fire(session, spec, held, due[spec.name])
                    if record is not None:
                        records.append(record)
            return records

    def _due(self, session: Session) -> dict[str, Any]:
        """The schedules due now, read with one query (a tick a second: reading each schedule's row
        was most of an idle controller's database work); each is claimed on its own below."""
        rows = plain_rows(session, select(Schedule.name, Schedule.next_run_at, Schedule.cron, Schedule.interval_seconds)
                          .where(Schedule.enabled.is_(True), Schedule.run_id.is_(None),
                                 Schedule.next_run_at <= self.clock()))
        session.rollback()  # read only: the claims start their own transactions
        return {row.name: row for row in rows}

    def _fence(self, leadership: lease.Leadership) -> Callable[[Session], None]:
        return lambda session: lease.fence(session, leadership, now=self.clock(),
                                           lease_seconds=self.settings.scheduler_lease_seconds)

    def _adopt(self, session: Session, held: lease.Leadership) -> list[RunRecord]:
        """New leader: make sure every schedule has its row, and close the runs a previous
        leader left unfinished."""
        now = self.clock()
        rows = {row.name: row for row in session.exec(select(Schedule)).all()}
        records = []
        for spec in self.specs.values():
            row = rows.get(spec.name)
            timing = spec.timing
            if row is None:
                # The settings give a schedule its first timing; after that, the row's (an admin
                # changes it through the API). An interval schedule runs at once the first time,
                # a cron one at its next time.
                first = timing.next_after(now) if timing.cron else now
                session.add(Schedule(name=spec.name, cron=timing.cron, interval_seconds=timing.interval_seconds,
                                     next_run_at=first))
            elif row.run_id is not None:
                row.run_id, row.run_started_at = None, None
                row.last_outcome, row.last_detail, row.last_finished_at = "interrupted", INTERRUPTED_DETAIL, now
                session.add(row)
                SCHEDULER_RUNS.labels(schedule=spec.name, outcome="interrupted").inc()
                log.warning("scheduled run interrupted by a change of leader", schedule=spec.name)
                records.append(RunRecord(spec.name, "interrupted", INTERRUPTED_DETAIL))
        try:
            self._fence(held)(session)
            session.commit()
        except lease.LeadershipLost:
            session.rollback()
            return []
        return records

    def _fire(self, session: Session, spec: ScheduleSpec, held: lease.Leadership, row: Any) -> RunRecord | None:
        """Claim the due schedule ``row`` (as read at the tick's start) and run it. The claim holds only
        while the row is as read, still enabled and not running: an admin's change meanwhile, or
        another leader's claim, wins."""
        now = self.clock()
        run_id = uuid.uuid4()
        claimed = session.execute(
            update(Schedule)
            .where(Schedule.name == spec.name, Schedule.next_run_at == row.next_run_at, Schedule.run_id.is_(None),
                   Schedule.enabled.is_(True))
            .values(run_id=run_id, run_started_at=now, last_run_at=now,
                    next_run_at=next_run_after_run(Timing(cron=row.cron, interval_seconds=row.interval_seconds),
                                                   due=row.next_run_at, now=now))
            .execution_options(synchronize_session=False)
        )
        try:
            if claimed.rowcount != 1:
                session.rollback()
                return None
            self._fence(held)(session)
            session.commit()
        except lease.LeadershipLost:
            session.rollback()
            return None
        outcome, detail = "succeeded", ""
        try:
            detail = spec.run(RunContext(session=session, broker=self.broker, settings=self.settings, now=now,
                                         fence=self._fence(held)))
        except lease.LeadershipLost:
            session.rollback()
            log.warning("scheduled run stopped: the lease went to another controller", schedule=spec.name)
            return None
        except Exception as exc:  # the run's failure is the schedule's outcome, not the scheduler's end
            session.rollback()
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"[:2048]
            log.error("scheduled run failed", schedule=spec.name, exc_info=True)
        try:
            session.execute(
                update(Schedule).where(Schedule.name == spec.name, Schedule.run_id == run_id)
                .values(run_id=None, run_started_at=None, last_outcome=outcome, last_detail=detail[:2048],
                        last_finished_at=self.clock())
                .execution_options(synchronize_session=False)
            )
            self._fence(held)(session)
            session.commit()
        except lease.LeadershipLost:
            session.rollback()
            return None
        SCHEDULER_RUNS.labels(schedule=spec.name, outcome=outcome).inc()
        log.info("scheduled run finished", schedule=spec.name, outcome=outcome, detail=detail)
        return RunRecord(spec.name, outcome, detail)

    # --- the thread ----------------------------------------------------------------------------

    def run_once(self) -> list[RunRecord]:
        return self.tick()

    def pass_failed(self) -> None:
        self.leadership = None  # a failed tick may have lost the lease: take it again first
        SCHEDULER_LEADER.set(0)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop ticking and give the lease up, so another controller takes over at once."""
        super().stop(timeout)
        if self.leadership is not None:
            try:
                with Session(self.engine) as session:
                    lease.release(session, self.leadership, now=self.clock())
            except Exception:  # the lease then simply runs out
                log.warning("could not release the scheduler lease", exc_info=True)
            self.leadership = None
            SCHEDULER_LEADER.set(0)
