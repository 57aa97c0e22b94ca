from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query
from sqlmodel import Session

from services.controller import exports
from services.controller.api.auth import authorize
from services.controller.api.deps import Paging, get_paging, get_scope, get_session
from services.controller.api.schemas.audit import ExportAuditPublic
from services.controller.api.schemas.common import Page
from services.controller.rules.scope import DomainScope

router = APIRouter(prefix="/domains/{domain_id}/audit", tags=["audit"], dependencies=[Depends(authorize)])


@router.get("/exports", response_model=Page[ExportAuditPublic])
def list_exports(
    device_id: uuid.UUID | None = Query(None),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    paging: Paging = Depends(get_paging),
):
    """Every certificate export in the domain and its descendants, newest first."""
    rows, total = exports.list_exports(session, scope=scope, offset=paging.offset, limit=paging.limit,
                                       device_id=device_id)
    items = [ExportAuditPublic.model_validate(r, from_attributes=True) for r in rows]
    return Page[ExportAuditPublic](items=items, total=total, offset=paging.offset, limit=paging.limit)
