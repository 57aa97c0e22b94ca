from __future__ import annotations

import uuid

import dramatiq
from fastapi import APIRouter, Depends, Response
from sqlmodel import Session

from services.controller.api.auth import Principal, authorize
from services.controller.api.body_limit import accepts_body
from services.controller.api.deps import Paging, get_broker, get_paging, get_scope, get_session, get_settings
from services.controller.api.schemas.bulk_actions import (
    BulkActionCreate,
    BulkActionPublic,
    BulkWeakCrypto,
    BulkWeakCryptoResult,
)
from services.controller.api.schemas.bulk_enrollments import MAX_SELECTION_BODY
from services.controller.api.schemas.common import Page
from services.controller.crud import bulk_actions as crud
from services.controller.queueing.publishing import publish_jobs
from services.controller.rules.scope import DomainScope
from services.controller.rules.trustpoint_actions import action_named
from shared.clock import utcnow
from shared.events import BULK_QUEUE
from shared.settings import Settings

router = APIRouter(prefix="/domains/{domain_id}", tags=["bulk actions"], dependencies=[Depends(authorize)])


@router.post("/bulk-actions", response_model=BulkActionPublic, status_code=202,
             openapi_extra=accepts_body(MAX_SELECTION_BODY))
def start_bulk_action(
    body: BulkActionCreate,
    response: Response,
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings),
    broker: dramatiq.Broker = Depends(get_broker),
    principal: Principal = Depends(authorize),
):
    """Re-enroll, refresh or delete the trustpoints of one enrollment object on the selected
    devices; trustpoints busy with an unfinished job are skipped (and counted). Delete needs
    ``"confirm": true``."""
    action = action_named(body.action)
    now = utcnow()
    batch, job_ids = crud.create_action_batch(
        session, scope=scope, action=action, enrollment_object_id=body.enrollment_object_id,
        selection=body.selection, filters=body.filters, confirm=body.confirm, settings=settings, now=now,
        requested_by=principal.describe(),
    )
    session.commit()
    # Stamped with the time the leases count from; what the broker refuses, the reconciler re-publishes.
    publish_jobs(broker, [(action.kind, job_id, BULK_QUEUE) for job_id in job_ids], published_at=now)
    response.headers["Location"] = f"/api/v1/domains/{scope.domain_id}/bulk-actions/{batch.id}"
    return crud.progress(session, batch, now=now)


@router.get("/bulk-actions", response_model=Page[BulkActionPublic])
def list_bulk_actions(scope: DomainScope = Depends(get_scope), session: Session = Depends(get_session),
                      paging: Paging = Depends(get_paging)):
    rows, total = crud.list_batches(session, scope=scope, offset=paging.offset, limit=paging.limit)
    now = utcnow()
    return Page[BulkActionPublic](items=[crud.progress(session, b, now=now) for b in rows], total=total,
                                  offset=paging.offset, limit=paging.limit)


@router.get("/bulk-actions/{batch_id}", response_model=BulkActionPublic)
def get_bulk_action(batch_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                    session: Session = Depends(get_session)):
    return crud.progress(session, crud.get_batch(session, scope=scope, batch_id=batch_id), now=utcnow())


@router.post("/bulk-weak-crypto", response_model=BulkWeakCryptoResult, openapi_extra=accepts_body(MAX_SELECTION_BODY))
def set_weak_crypto(body: BulkWeakCrypto, scope: DomainScope = Depends(get_scope),
                    session: Session = Depends(get_session)):
    """Enable or disable weak-crypto on the selected devices; enabling needs ``"confirm": true``."""
    selected, changed = crud.set_weak_crypto(session, scope=scope, selection=body.selection,
                                             weak_crypto=body.weak_crypto, confirm=body.confirm)
    session.commit()
    return BulkWeakCryptoResult(weak_crypto=body.weak_crypto, selected=selected, changed=changed)
