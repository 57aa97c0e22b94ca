"""When a schedule runs next: cron and interval timings, the catch-up after downtime, and the
timings refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.controller.scheduling.timing import Timing, next_run_after_run
from shared.errors import ValidationError

T = datetime(2030, 1, 31, 22, 30, tzinfo=UTC)


def test_a_cron_schedule_runs_at_its_next_time_in_utc():
    daily = Timing(cron="0 3 * * *")
    assert daily.next_after(T) == datetime(2030, 2, 1, 3, 0, tzinfo=UTC)  # across a month's end
    assert daily.next_after(datetime(2030, 2, 1, 3, 0, tzinfo=UTC)) == datetime(2030, 2, 2, 3, 0, tzinfo=UTC)
    assert Timing(cron="*/15 * * * *").next_after(T) == datetime(2030, 1, 31, 22, 45, tzinfo=UTC)
    assert daily.describe() == "cron 0 3 * * *"


def test_an_interval_schedule_runs_every_interval():
    assert Timing(interval_seconds=60).next_after(T) == T + timedelta(seconds=60)
    assert Timing(interval_seconds=60).describe() == "every 60 s"


def test_after_downtime_a_missed_run_happens_once_not_once_per_missed_run():
    hourly = Timing(interval_seconds=3600)
    due = T
    back = T + timedelta(hours=10, minutes=5)  # ten runs missed
    following = next_run_after_run(hourly, due=due, now=back)
    assert following == back + timedelta(hours=1)  # not T + 1 h, which would fire again at once
    # On time, the next run keeps the schedule's own rhythm.
    assert next_run_after_run(hourly, due=T, now=T + timedelta(seconds=2)) == T + timedelta(hours=1)


@pytest.mark.parametrize(("cron", "interval", "code"), [
    ("61 * * * *", None, "cron_invalid"),
    ("every day", None, "cron_invalid"),
    ("0 3 * *", None, "cron_invalid"),
    ("0 3 * * *", 60, "schedule_timing_ambiguous"),
    ("", None, "schedule_timing_ambiguous"),
    ("", 0, "schedule_interval_invalid"),
])
def test_a_timing_that_cannot_run_is_refused_with_a_code(cron, interval, code):
    with pytest.raises(ValidationError) as refused:
        Timing(cron=cron, interval_seconds=interval)
    assert refused.value.code == code
