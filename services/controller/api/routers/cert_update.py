"""``/api/v1/cert-update``: certfleet's CA bundle, its tests and updates, and its daily automatic
update. An admin homed at Global only: the bundle decides which servers certfleet and every
device trust. Every
test and update is audited (``GET /cert-update/audit``)."""

from __future__ import annotations

import uuid

import dramatiq
from fastapi import APIRouter, Depends
from sqlalchemy import func
from sqlmodel import Session, select

from services.controller.api.auth import Principal, require_installation_admin
from services.controller.api.deps import Paging, get_broker, get_paging, get_session, get_settings
from services.controller.api.schemas.cert_update import (
    AutoUpdate,
    CertUpdateAudit,
    CertUpdatePush,
    CertUpdateResult,
    CertUpdateStatus,
    RunNow,
)
from services.controller.api.schemas.common import Page
from services.controller.ca_bundles import auto_update
from services.controller.ca_bundles.push import push_progress
from services.controller.ca_bundles.updates import installed, run_update, test_update
from shared.clock import utcnow
from shared.models import CaBundleUpdate, Device, Schedule
from shared.settings import Settings

router = APIRouter(prefix="/cert-update", tags=["CA bundle"],
                   dependencies=[Depends(require_installation_admin)])


def _default_cron(session: Session) -> str:
    return auto_update.daily_cron(auto_update.installation_seed(session))


@router.get("", response_model=CertUpdateStatus)
def show(session: Session = Depends(get_session)):
    """``show cert-update``: the automatic update's time (or disabled) and when the bundle last changed."""
    row = session.get(Schedule, auto_update.SCHEDULE)
    bundle = installed(session)
    current = bundle.version if bundle else None
    on_current = session.exec(select(func.count()).select_from(Device).where(Device.bundle_version == current)).one() \
        if current else 0
    total = session.exec(select(func.count()).select_from(Device)).one()
    return CertUpdateStatus(
        auto_update=row.enabled if row else True,
        schedule=auto_update.schedule_line(row, default_cron=_default_cron(session)),
        last_modified_message=auto_update.last_modified_line(bundle),
        version=bundle.version if bundle else "", sha256=bundle.sha256 if bundle else "",
        certificates=bundle.certificates if bundle else 0, last_modified=bundle.last_modified if bundle else None,
        source_url=bundle.source_url if bundle else "", devices_current=on_current, devices_older=total - on_current,
    )


@router.post("/test", response_model=CertUpdateResult)
def test(session: Session = Depends(get_session), settings: Settings = Depends(get_settings),
         principal: Principal = Depends(require_installation_admin)):
    """Compare the installed bundle with the latest; when out of date, check connections with it."""
    return CertUpdateResult.model_validate(
        test_update(session, settings, now=utcnow(), requested_by=principal.describe()), from_attributes=True)


@router.post("/run-now", response_model=CertUpdateResult)
def run_now(body: RunNow | None = None, session: Session = Depends(get_session),
            settings: Settings = Depends(get_settings), broker: dramatiq.Broker = Depends(get_broker),
            principal: Principal = Depends(require_installation_admin)):
    """Replace the bundle with the latest when every connection check passes (or when forced) and
    push it to every device."""
    result = run_update(session, broker, settings, now=utcnow(), force=bool(body and body.force),
                        requested_by=principal.describe())
    return CertUpdateResult.model_validate(result, from_attributes=True)


@router.put("/auto-update", response_model=CertUpdateStatus)
def set_auto_update(body: AutoUpdate, session: Session = Depends(get_session)):
    row = session.get(Schedule, auto_update.SCHEDULE, with_for_update=True)
    if row is None:  # no scheduler has taken it up yet: its time is the installation's own
        from services.controller.scheduling.timing import Timing

        timing = Timing(cron=_default_cron(session))
        row = Schedule(name=auto_update.SCHEDULE, cron=timing.cron, next_run_at=timing.next_after(utcnow()))
    row.enabled = body.enabled
    session.add(row)
    session.commit()
    return show(session)


@router.get("/audit", response_model=Page[CertUpdateAudit])
def audit(session: Session = Depends(get_session), paging: Paging = Depends(get_paging)):
    total = session.exec(select(func.count()).select_from(CaBundleUpdate)).one()
    rows = session.exec(select(CaBundleUpdate).order_by(CaBundleUpdate.created_at.desc(), CaBundleUpdate.id)
                        .offset(paging.offset).limit(paging.limit)).all()
    return Page[CertUpdateAudit](items=[CertUpdateAudit.model_validate(r, from_attributes=True) for r in rows],
                                 total=total, offset=paging.offset, limit=paging.limit)


@router.get("/pushes/{batch_id}", response_model=CertUpdatePush)
def get_push(batch_id: uuid.UUID, session: Session = Depends(get_session)):
    """A push of the bundle to the devices: counts, failures by error code, ETA (404 ``push_not_found``)."""
    return CertUpdatePush(**push_progress(session, batch_id, now=utcnow()))
