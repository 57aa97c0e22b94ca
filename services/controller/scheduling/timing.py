"""When a schedule runs next. Pure: times in, times out, all in UTC.

A schedule has a cron expression (five fields: minute hour day-of-month month day-of-week,
read by croniter) or a fixed interval. After downtime, the next run is counted from now: a
missed run happens once, at start-up, not once per run missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

from shared.errors import ValidationError

#: Bounds of a schedule's interval: a run at most every second, at least once a year.
MIN_INTERVAL, MAX_INTERVAL = 1, 366 * 24 * 3600


@dataclass(frozen=True)
class Timing:
    """A cron expression, or an interval in seconds (exactly one of them)."""

    cron: str = ""
    interval_seconds: int | None = None

    def __post_init__(self) -> None:
        check_timing(self.cron, self.interval_seconds)

    def next_after(self, moment: datetime) -> datetime:
        """The first run time strictly after ``moment``."""
        moment = moment.astimezone(UTC)
        if self.cron:
            return croniter(self.cron, moment).get_next(datetime).astimezone(UTC)
        assert self.interval_seconds is not None
        return moment + timedelta(seconds=self.interval_seconds)

    def describe(self) -> str:
        return f"cron {self.cron}" if self.cron else f"every {self.interval_seconds} s"


def check_timing(cron: str, interval_seconds: int | None) -> None:
    """Refuse a timing that cannot run, with a stable code."""
    if bool(cron) == (interval_seconds is not None):
        raise ValidationError("a schedule has a cron expression or an interval in seconds, exactly one of them",
                              code="schedule_timing_ambiguous")
    if cron:
        fields = cron.split()
        if len(fields) != 5 or not croniter.is_valid(cron):
            raise ValidationError(
                f"{cron!r} is not a cron expression: five fields, minute hour day-of-month month day-of-week "
                "(e.g. '0 3 * * *' for every day at 03:00 UTC)",
                code="cron_invalid",
            )
    elif not MIN_INTERVAL <= interval_seconds <= MAX_INTERVAL:  # type: ignore[operator]
        raise ValidationError(
            f"a schedule's interval must be {MIN_INTERVAL} to {MAX_INTERVAL} seconds, not {interval_seconds}",
            code="schedule_interval_invalid",
        )


def next_run_after_run(timing: Timing, *, due: datetime, now: datetime) -> datetime:
    """The next run once the run due at ``due`` starts at ``now``: the regular next time, or the
    first one after now when the regular one has passed too (catch-up runs once)."""
    following = timing.next_after(due)
    return following if following > now else timing.next_after(now)
