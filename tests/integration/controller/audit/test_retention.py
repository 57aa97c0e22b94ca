"""The audit log keeps its entries CERTFLEET_AUDIT_RETENTION_DAYS: the ``audit-retention`` schedule
deletes older ones, a batch per transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from services.controller.audit.store import prune
from services.controller.scheduling.scheduler import Scheduler
from services.controller.scheduling.schedules import default_schedules
from shared.errors import ConfigurationError
from shared.models import GLOBAL_DOMAIN_ID, AuditEntry
from shared.settings import Settings
from tests.support.clock import START, ManualClock

BOTH = pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)


def fill(engine, ages_in_days: list[float]) -> None:
    with Session(engine) as session:
        session.add_all(AuditEntry(at=START - timedelta(days=age), domain_id=GLOBAL_DOMAIN_ID, channel="api",
                                   action=f"aged_{age:g}", outcome="ok") for age in ages_in_days)
        session.commit()


def kept(engine) -> list[str]:
    with Session(engine) as session:
        return [e.action for e in session.exec(select(AuditEntry).order_by(AuditEntry.at.desc()))]


@BOTH
def test_entries_older_than_the_cut_go_a_batch_at_a_time(db_engine):
    fill(db_engine, [0, 10, 29.9, 30.1, 31, 400, 401])
    fenced = []
    with Session(db_engine) as session:
        pruned = prune(session, before=START - timedelta(days=30), fence=fenced.append, batch=2)
    assert pruned == 4
    assert len(fenced) == 3  # 2 + 2 + 0: each batch its own fenced transaction
    assert kept(db_engine) == ["aged_0", "aged_10", "aged_29.9"]


def test_the_schedule_prunes_what_the_setting_no_longer_keeps(sqlite_engine, stub_broker):
    fill(sqlite_engine, [1, 364, 366])
    settings = replace(Settings(), audit_retention_days=365)
    [spec] = [s for s in default_schedules(settings) if s.name == "audit-retention"]
    assert spec.timing.interval_seconds == 3600
    clock = ManualClock(START)
    scheduler = Scheduler(sqlite_engine, stub_broker, settings, specs=[spec], clock=clock, holder="test")
    [record] = scheduler.tick()
    assert (record.outcome, record.detail) == ("succeeded", "1 audit entries older than 365 days pruned")
    assert kept(sqlite_engine) == ["aged_1", "aged_364"]
    assert scheduler.tick() == []  # not due again for an hour
    clock.advance(2 * 86400)  # two days on, the 364-day-old entry is past the cut
    [again] = scheduler.tick()
    assert again.detail == "1 audit entries older than 365 days pruned" and kept(sqlite_engine) == ["aged_1"]


def test_the_retention_must_be_a_positive_number_of_days():
    assert Settings.from_env({}).audit_retention_days == 365
    assert Settings.from_env({"CERTFLEET_AUDIT_RETENTION_DAYS": "30"}).audit_retention_days == 30
    for bad in ("0", "-1"):
        with pytest.raises(ConfigurationError, match="CERTFLEET_AUDIT_RETENTION_DAYS must be greater than 0"):
            Settings.from_env({"CERTFLEET_AUDIT_RETENTION_DAYS": bad})
