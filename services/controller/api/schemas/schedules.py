from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class SchedulePublic(BaseModel):
    """A schedule of the scheduler, as ``GET /api/v1/schedules`` shows it."""

    name: str
    description: str
    #: "every 60 s", or "cron 0 3 * * *" (UTC)
    timing: str
    enabled: bool
    #: Empty until a scheduler has taken the schedule up.
    next_run_at: datetime | None
    #: When the last run started and ended, and how it went (succeeded, failed, interrupted).
    last_run_at: datetime | None
    last_finished_at: datetime | None
    last_outcome: str
    last_detail: str
    #: True while a run is under way.
    running: bool


class ScheduleUpdate(BaseModel):
    """Change a schedule: its timing (a cron expression or an interval, not both) and whether it runs."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=None, max_length=128)
    interval_seconds: int | None = None
    enabled: bool | None = None
