from __future__ import annotations

import uuid

import dramatiq
from fastapi import APIRouter, Depends, Response
from sqlmodel import Session

from services.controller.api.auth import Principal, authorize
from services.controller.api.body_limit import accepts_body
from services.controller.api.deps import Paging, get_broker, get_paging, get_scope, get_session, get_settings
from services.controller.api.schemas.bulk_enrollments import (
    MAX_SELECTION_BODY,
    BulkEnrollmentCreate,
    BulkEnrollmentPublic,
)
from services.controller.api.schemas.common import Page
from services.controller.crud import bulk_enrollments as crud
from services.controller.queueing.publishing import publish_jobs
from services.controller.rules.scope import DomainScope
from shared.clock import utcnow
from shared.enums import JobKind
from shared.events import BULK_QUEUE
from shared.settings import Settings

router = APIRouter(prefix="/domains/{domain_id}/bulk-enrollments", tags=["bulk enrollments"],
                   dependencies=[Depends(authorize)])


@router.post("", response_model=BulkEnrollmentPublic, status_code=202, openapi_extra=accepts_body(MAX_SELECTION_BODY))
def start_bulk_enrollment(
    body: BulkEnrollmentCreate,
    response: Response,
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings),
    broker: dramatiq.Broker = Depends(get_broker),
    principal: Principal = Depends(authorize),
):
    """Install an enrollment object on every selected device; devices that already have the
    trustpoint are skipped (and counted)."""
    now = utcnow()
    batch, job_ids = crud.create_batch(
        session, scope=scope, enrollment_object_id=body.enrollment_object_id, selection=body.selection,
        settings=settings, now=now, requested_by=principal.describe(),
    )
    session.commit()
    # Stamped with the time the leases count from; what the broker refuses, the reconciler re-publishes.
    publish_jobs(broker, [(JobKind.ENROLL, job_id, BULK_QUEUE) for job_id in job_ids], published_at=now)
    response.headers["Location"] = f"/api/v1/domains/{scope.domain_id}/bulk-enrollments/{batch.id}"
    return crud.progress(session, batch, now=now)


@router.get("", response_model=Page[BulkEnrollmentPublic])
def list_bulk_enrollments(scope: DomainScope = Depends(get_scope), session: Session = Depends(get_session),
                          paging: Paging = Depends(get_paging)):
    rows, total = crud.list_batches(session, scope=scope, offset=paging.offset, limit=paging.limit)
    now = utcnow()
    return Page[BulkEnrollmentPublic](items=[crud.progress(session, b, now=now) for b in rows], total=total,
                                      offset=paging.offset, limit=paging.limit)


@router.get("/{batch_id}", response_model=BulkEnrollmentPublic)
def get_bulk_enrollment(batch_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                        session: Session = Depends(get_session)):
    return crud.progress(session, crud.get_batch(session, scope=scope, batch_id=batch_id), now=utcnow())
