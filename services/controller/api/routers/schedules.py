"""``GET /api/v1/schedules``: what the scheduler runs, when it runs next and how the last run
went; ``PUT /api/v1/schedules/{name}``: change a schedule's timing or switch it off;
``POST /api/v1/schedules/{name}/run``: run it at the scheduler's next tick instead of waiting.

Schedules are the whole installation's, not a domain's: any valid token may read them, only
an admin homed at Global may change them."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlmodel import Session, select

from services.controller.api.auth import authenticate, require_installation_admin
from services.controller.api.deps import get_session, get_settings
from services.controller.api.schemas.schedules import SchedulePublic, ScheduleUpdate
from services.controller.scheduling.schedules import ScheduleSpec, installation_schedules
from services.controller.scheduling.timing import Timing
from shared.clock import utcnow
from shared.errors import ConflictError, NotFoundError, ValidationError
from shared.models import Schedule
from shared.settings import Settings

router = APIRouter(prefix="/schedules", tags=["schedules"], dependencies=[Depends(authenticate)])


def _public(name: str, spec: ScheduleSpec | None, row: Schedule | None) -> SchedulePublic:
    timing = Timing(cron=row.cron, interval_seconds=row.interval_seconds) if row else spec.timing
    return SchedulePublic(
        name=name, description=spec.description if spec else "", timing=timing.describe(),
        enabled=row.enabled if row else True, next_run_at=row.next_run_at if row else None,
        last_run_at=row.last_run_at if row else None, last_finished_at=row.last_finished_at if row else None,
        last_outcome=row.last_outcome if row else "", last_detail=row.last_detail if row else "",
        running=bool(row and row.run_id is not None),
    )


@router.get("", response_model=list[SchedulePublic])
def list_schedules(session: Session = Depends(get_session), settings: Settings = Depends(get_settings)):
    """Every schedule, in name order. One that no scheduler has taken up yet shows no runs."""
    specs = {spec.name: spec for spec in installation_schedules(session, settings)}
    rows = {row.name: row for row in session.exec(select(Schedule)).all()}
    return [_public(name, specs.get(name), rows.get(name)) for name in sorted(specs.keys() | rows.keys())]


def _specs(session: Session, settings: Settings, name: str) -> dict[str, ScheduleSpec]:
    specs = {spec.name: spec for spec in installation_schedules(session, settings)}
    if name not in specs:
        raise NotFoundError(f"no schedule named {name!r}; the schedules are {', '.join(sorted(specs))}",
                            code="schedule_not_found")
    return specs


def _row(session: Session, spec: ScheduleSpec, now) -> Schedule:
    row = session.get(Schedule, spec.name, with_for_update=True)
    if row is None:  # no scheduler has taken it up yet: start it from its default timing
        row = Schedule(name=spec.name, cron=spec.timing.cron, interval_seconds=spec.timing.interval_seconds,
                       next_run_at=now)
    return row


_ADMIN = [Depends(require_installation_admin)]


@router.put("/{name}", response_model=SchedulePublic, dependencies=_ADMIN)
def update_schedule(name: str, body: ScheduleUpdate, session: Session = Depends(get_session),
                    settings: Settings = Depends(get_settings)):
    """Change a schedule's timing or switch it on or off (admin). A new timing counts its next
    run from now."""
    specs = _specs(session, settings, name)
    if body.cron is not None and not body.cron.strip():
        raise ValidationError("cron is empty: give a cron expression, or leave cron out and give interval_seconds",
                              code="cron_invalid")
    now = utcnow()
    row = _row(session, specs[name], now)
    if body.cron is not None or body.interval_seconds is not None:
        timing = Timing(cron=body.cron or "", interval_seconds=body.interval_seconds)  # refuses a bad one
        row.cron, row.interval_seconds = timing.cron, timing.interval_seconds
        row.next_run_at = timing.next_after(now)
    if body.enabled is not None:
        row.enabled = body.enabled
    session.add(row)
    session.commit()
    return _public(name, specs[name], row)


@router.post("/{name}/run", response_model=SchedulePublic, status_code=202, dependencies=_ADMIN)
def run_schedule_now(name: str, session: Session = Depends(get_session), settings: Settings = Depends(get_settings)):
    """Run a schedule at the leading scheduler's next tick (admin); its later runs keep their
    timing. A run already under way is not started twice; a disabled schedule is refused."""
    specs = _specs(session, settings, name)
    now = utcnow()
    row = _row(session, specs[name], now)
    if not row.enabled:
        raise ConflictError(f"schedule {name} is disabled; enable it first (certfleet schedules set {name} --enable)",
                            code="schedule_disabled")
    if row.run_id is None:
        row.next_run_at = min(row.next_run_at, now)
    session.add(row)
    session.commit()
    return _public(name, specs[name], row)
