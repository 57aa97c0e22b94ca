"""A domain's alerts: ``GET /api/v1/domains/{d}/alerts`` (its subtree's, filtered and paged,
newest ``last_seen`` first), ``GET …/alerts/summary`` (open alerts counted), ``GET …/alerts/{id}``
and ``POST …/alerts/{id}/acknowledge`` (a writer says someone is on it).

Alerts are raised and cleared by the ``alert-conditions`` schedule, never through the API. An
alert outside the domain's subtree is answered as if it did not exist (404 alert_not_found)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query
from sqlmodel import Session

from services.controller.alerts import queries, store
from services.controller.api.auth import Principal, authorize
from services.controller.api.deps import Paging, get_paging, get_scope, get_session
from services.controller.api.schemas.alerts import AlertPublic, AlertStateFilter, AlertSummary
from services.controller.api.schemas.common import Page
from services.controller.rules.scope import DomainScope
from shared.clock import utcnow
from shared.enums import AlertCode, Severity

router = APIRouter(prefix="/domains/{domain_id}/alerts", tags=["alerts"], dependencies=[Depends(authorize)])


@router.get("", response_model=Page[AlertPublic])
def list_alerts(
    state: AlertStateFilter | None = Query(None, description="active, acknowledged, cleared, or open (not cleared)"),
    code: AlertCode | None = Query(None),
    severity: Severity | None = Query(None),
    device_id: uuid.UUID | None = Query(None),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    paging: Paging = Depends(get_paging),
):
    """The alerts of the domain and its descendants, newest ``last_seen`` first."""
    rows, total = queries.list_alerts(session, scope=scope, offset=paging.offset, limit=paging.limit,
                                      state=state.value if state else None, code=code, severity=severity,
                                      device_id=device_id)
    return Page[AlertPublic](items=[AlertPublic.of(a) for a in rows], total=total,
                             offset=paging.offset, limit=paging.limit)


@router.get("/summary", response_model=AlertSummary)
def alert_summary(scope: DomainScope = Depends(get_scope), session: Session = Depends(get_session)):
    """The open alerts of the domain and its descendants, counted by state, code and severity."""
    return AlertSummary.model_validate(queries.summarize(session, scope=scope), from_attributes=True)


@router.get("/{alert_id}", response_model=AlertPublic)
def get_alert(alert_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
              session: Session = Depends(get_session)):
    return AlertPublic.of(store.get_alert(session, alert_id, sees=scope.sees))


@router.post("/{alert_id}/acknowledge", response_model=AlertPublic)
def acknowledge_alert(alert_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                      session: Session = Depends(get_session), principal: Principal = Depends(authorize)):
    """Someone is on it: the alert stays open until its condition ends. Acknowledging it again
    changes nothing; a cleared alert cannot be acknowledged (409 alert_cleared)."""
    alert = store.get_alert(session, alert_id, sees=scope.sees)
    session.refresh(alert, with_for_update=True)  # one acknowledgement (and one event) however many ask at once
    store.acknowledge(session, alert, by=principal.describe(), now=utcnow())
    session.commit()
    return AlertPublic.of(alert)
