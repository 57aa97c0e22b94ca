"""``GET /api/v1/schedules``: what the scheduler runs, when it runs next and how the last run went.

Schedules are the whole installation's, not a domain's: any valid token may read them."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlmodel import Session, select

from services.controller.api.auth import authorize
from services.controller.api.deps import get_session, get_settings
from services.controller.api.schemas.schedules import SchedulePublic
from services.controller.scheduling.schedules import default_schedules
from services.controller.scheduling.timing import Timing
from shared.models import Schedule
from shared.settings import Settings

router = APIRouter(prefix="/schedules", tags=["schedules"], dependencies=[Depends(authorize)])


@router.get("", response_model=list[SchedulePublic])
def list_schedules(session: Session = Depends(get_session), settings: Settings = Depends(get_settings)):
    """Every schedule, in name order. One that no scheduler has run yet shows no runs."""
    specs = {spec.name: spec for spec in default_schedules(settings)}
    rows = {row.name: row for row in session.exec(select(Schedule)).all()}
    shown = []
    for name in sorted(specs.keys() | rows.keys()):
        spec, row = specs.get(name), rows.get(name)
        timing = Timing(cron=row.cron, interval_seconds=row.interval_seconds) if row else spec.timing
        shown.append(SchedulePublic(
            name=name, description=spec.description if spec else "", timing=timing.describe(),
            enabled=row.enabled if row else True,
            next_run_at=row.next_run_at if row else None,
            last_run_at=row.last_run_at if row else None, last_finished_at=row.last_finished_at if row else None,
            last_outcome=row.last_outcome if row else "", last_detail=row.last_detail if row else "",
            running=bool(row and row.run_id is not None),
        ))
    return shown
