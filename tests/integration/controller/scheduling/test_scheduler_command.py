"""``certfleet scheduler`` and ``certfleet controller --reconciler-only`` as an operator runs
them: each starts, says what it runs, does its work and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import time

from sqlmodel import Session, select

from shared.db import init_db, make_engine
from shared.models import LeaderLease, Schedule
from shared.settings import Settings
from tests.support.procs import Proc


def test_the_scheduler_runs_alone_takes_the_lease_fires_its_schedules_and_stops(tmp_path):
    url = f"sqlite:///{tmp_path / 'certfleet.db'}"
    engine = make_engine(Settings(database_url=url))
    init_db(engine)
    env = {**os.environ, "CERTFLEET_DATABASE_URL": url, "CERTFLEET_BROKER_URL": "",
           "CERTFLEET_LOG_LEVEL": "WARNING", "CERTFLEET_SCHEDULER_TICK_SECONDS": "0.2"}
    scheduler = Proc("scheduler", ["scheduler"], env, tmp_path)
    try:
        line = scheduler.wait_for_line(r"scheduler running as (\S+): (\d+) schedules, lease 15 s", timeout=30)
        deadline = time.monotonic() + 20
        while True:
            with Session(engine) as session:
                renewal = session.get(Schedule, "renewal")
                held = session.get(LeaderLease, "scheduler")
            if renewal is not None and renewal.last_outcome:
                break
            assert time.monotonic() < deadline, scheduler.output()
            time.sleep(0.1)
        assert renewal.last_outcome == "succeeded" and renewal.last_detail == "0 renewals published"
        assert held.holder == line[1]
    finally:
        scheduler.stop()
    assert scheduler.popen.returncode == 0, scheduler.output()
    with Session(engine) as session:  # a clean stop gives the leases (the scheduler's, the alert relay's) up at once
        leases = session.exec(select(LeaderLease)).all()
        assert {lease.name for lease in leases} == {"scheduler", "alert-relay"}
        assert all(lease.expires_at < session.get(Schedule, "renewal").next_run_at for lease in leases)
    engine.dispose()


def test_the_reconciler_runs_alone_and_stops(tmp_path):
    url = f"sqlite:///{tmp_path / 'certfleet.db'}"
    env = {**os.environ, "CERTFLEET_DATABASE_URL": url, "CERTFLEET_BROKER_URL": "", "CERTFLEET_LOG_LEVEL": "WARNING"}
    reconciler = Proc("reconciler", ["controller", "--reconciler-only"], env, tmp_path)
    try:
        reconciler.wait_for_line(r"reconciler running every 5 s", timeout=30)
    finally:
        reconciler.stop()
    assert reconciler.popen.returncode == 0, reconciler.output()
