"""The schedules certfleet runs, and what each run does.

A run publishes events (job ids on the queues); it never does device work itself. Each
definition is one entry here: a name, its timing (from the settings) and its run function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import dramatiq
from sqlmodel import Session

from services.controller.scheduling.renewal_pass import run_renewal_pass
from services.controller.scheduling.timing import Timing
from shared.settings import Settings


@dataclass(frozen=True)
class RunContext:
    session: Session
    broker: dramatiq.Broker
    settings: Settings
    now: datetime
    #: Called in every transaction the run commits: raises when the leader lost its lease.
    fence: Callable[[Session], None]


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    timing: Timing
    #: Does the run; returns what it did, in a line (shown as the run's detail).
    run: Callable[[RunContext], str]
    description: str = ""


def _renewal(ctx: RunContext) -> str:
    return run_renewal_pass(ctx.session, ctx.broker, now=ctx.now, settings=ctx.settings, fence=ctx.fence).describe()


def default_schedules(settings: Settings) -> list[ScheduleSpec]:
    return [
        ScheduleSpec("renewal", Timing(interval_seconds=settings.renewal_interval_seconds), _renewal,
                     "re-enroll trustpoints whose certificate is due for renewal"),
    ]
