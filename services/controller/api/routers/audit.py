"""``GET /api/v1/domains/{d}/audit``: the audit log of the domain and its descendants, newest first,
paged and filtered. Readable by every role, read_only included: an auditor needs no right to
change what they audit, and entries hold nothing secret (who, when, what, how it ended)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query
from sqlmodel import Session

from services.controller.api.auth import authorize
from services.controller.api.deps import Paging, get_paging, get_scope, get_session
from services.controller.api.schemas.audit import AuditEntryPublic, AuditOutcome
from services.controller.api.schemas.common import Page
from services.controller.audit.store import AuditFilters, list_entries
from services.controller.rules.scope import DomainScope

router = APIRouter(prefix="/domains/{domain_id}/audit", tags=["audit"], dependencies=[Depends(authorize)])


@router.get("", response_model=Page[AuditEntryPublic])
def list_audit_entries(
    since: datetime | None = Query(None, description="entries at or after this time (ISO 8601)"),
    until: datetime | None = Query(None, description="entries before this time (ISO 8601)"),
    action: str | None = Query(None, max_length=64,
                               description="a route's or command's name, e.g. export_certificate, token_create"),
    token_id: uuid.UUID | None = Query(None, description="entries of this API token"),
    outcome: AuditOutcome | None = Query(None, description="ok or failed"),
    device_id: uuid.UUID | None = Query(None, description="entries about this device"),
    target_id: uuid.UUID | None = Query(None, description="entries naming this id (as target or device)"),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    paging: Paging = Depends(get_paging),
):
    """Every change asked in the domain and its descendants, made or refused, newest first."""
    filters = AuditFilters(since=since, until=until, action=action, token_id=token_id,
                           outcome=outcome.value if outcome else None, device_id=device_id, target_id=target_id)
    rows, total = list_entries(session, scope=scope, filters=filters, offset=paging.offset, limit=paging.limit)
    return Page[AuditEntryPublic](items=[AuditEntryPublic.of(e) for e in rows], total=total,
                                  offset=paging.offset, limit=paging.limit)
