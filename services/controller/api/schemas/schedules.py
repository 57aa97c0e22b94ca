from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.controller.api.schemas.common import InputModel
from services.controller.scheduling.timing import MAX_INTERVAL, MIN_INTERVAL


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


# The cron expressions the document offers: five fields of numbers, '*' or '*/step', days of the
# month to 28 (so every month has them). timing.check_timing takes more (croniter's whole syntax)
# and stays the check, with its codes.
_STEP = r"(?:/[1-9][0-9]?)?"
CRON_PATTERN = (rf"^(?:\*{_STEP}|[1-5]?[0-9]) (?:\*{_STEP}|1?[0-9]|2[0-3]) (?:\*|[1-9]|1[0-9]|2[0-8]) "
                r"(?:\*|[1-9]|1[0-2]) (?:\*|[0-6])$")


class ScheduleUpdate(InputModel):
    """Change a schedule: its timing (a cron expression or an interval, not both) and whether it runs."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"not": {
        "required": ["cron", "interval_seconds"],
        "properties": {"cron": {"type": "string"}, "interval_seconds": {"type": "integer"}}}})

    cron: str | None = Field(default=None, max_length=128, json_schema_extra={"pattern": CRON_PATTERN})
    interval_seconds: int | None = Field(default=None, json_schema_extra={"minimum": MIN_INTERVAL,
                                                                          "maximum": MAX_INTERVAL})
    enabled: bool | None = None
