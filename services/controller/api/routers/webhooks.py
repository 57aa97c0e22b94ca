"""``/api/v1/domains/{domain_id}/webhooks``: webhooks that receive the alert events of the
domain's subtree, and each webhook's delivery log.

A domain sees its own webhooks and its subdomains'; a sibling's answer 404, as if they did not
exist. Admins add, delete and retry; every role reads. The secret is write-only."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlmodel import Session

from services.controller.api.auth import Principal, writes_need
from services.controller.api.deps import Paging, get_paging, get_scope, get_session
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.webhooks import DeliveryPublic, WebhookCreate, WebhookPublic
from services.controller.crud import webhooks as crud
from services.controller.rules.scope import DomainScope
from shared.clock import utcnow
from shared.enums import DeliveryState, Role
from shared.models import Webhook, WebhookDelivery
from shared.secrets import SecretBox

authorize_webhooks = writes_need(Role.ADMIN)
router = APIRouter(prefix="/domains/{domain_id}/webhooks", tags=["webhooks"],
                   dependencies=[Depends(authorize_webhooks)])


def get_secret_box(request: Request) -> SecretBox:
    return request.app.state.secret_box


def public(webhook: Webhook, counts: dict[str, int]) -> WebhookPublic:
    return WebhookPublic(id=webhook.id, domain_id=webhook.domain_id, name=webhook.name, url=webhook.url,
                         codes=list(webhook.codes), severities=list(webhook.severities), enabled=webhook.enabled,
                         created_by=webhook.created_by, created_at=webhook.created_at,
                         pending=counts.get(DeliveryState.PENDING.value, 0),
                         dead=counts.get(DeliveryState.DEAD.value, 0))


def delivery_public(delivery: WebhookDelivery) -> DeliveryPublic:
    return DeliveryPublic.model_validate(delivery, from_attributes=True)


@router.post("", response_model=WebhookPublic, status_code=201)
def create_webhook(body: WebhookCreate, scope: DomainScope = Depends(get_scope),
                   session: Session = Depends(get_session), box: SecretBox = Depends(get_secret_box),
                   principal: Principal = Depends(authorize_webhooks)):
    """Send the alert events of this domain and its subdomains (those the codes and severities let
    through; empty lists let everything through) to ``url``, signed with ``secret``."""
    webhook = crud.create_webhook(session, scope=scope, data=body, box=box, created_by=principal.describe(),
                                  now=utcnow())
    session.commit()
    return public(webhook, {})


@router.get("", response_model=Page[WebhookPublic])
def list_webhooks(scope: DomainScope = Depends(get_scope), session: Session = Depends(get_session),
                  paging: Paging = Depends(get_paging)):
    rows, total = crud.list_webhooks(session, scope=scope, offset=paging.offset, limit=paging.limit)
    counts = crud.delivery_counts(session, [w.id for w in rows])
    return Page[WebhookPublic](items=[public(w, counts[w.id]) for w in rows], total=total, offset=paging.offset,
                               limit=paging.limit)


@router.get("/{webhook_id}", response_model=WebhookPublic)
def get_webhook(webhook_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                session: Session = Depends(get_session)):
    webhook = crud.get_webhook(session, scope=scope, webhook_id=webhook_id)
    return public(webhook, crud.delivery_counts(session, [webhook.id])[webhook.id])


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
def delete_webhook(webhook_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                   session: Session = Depends(get_session)):
    crud.delete_webhook(session, scope=scope, webhook_id=webhook_id)
    session.commit()
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryPublic])
def list_deliveries(webhook_id: uuid.UUID, state: DeliveryState | None = Query(None),
                    scope: DomainScope = Depends(get_scope), session: Session = Depends(get_session),
                    paging: Paging = Depends(get_paging)):
    """The webhook's delivery log, newest first: each event's attempts, last answer and state."""
    rows, total = crud.list_deliveries(session, scope=scope, webhook_id=webhook_id, state=state,
                                       offset=paging.offset, limit=paging.limit)
    return Page[DeliveryPublic](items=[delivery_public(d) for d in rows], total=total, offset=paging.offset,
                                limit=paging.limit)


@router.post("/{webhook_id}/deliveries/{delivery_id}/retry", response_model=DeliveryPublic)
def retry_delivery(webhook_id: uuid.UUID, delivery_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                   session: Session = Depends(get_session)):
    """Send a dead delivery again: it is pending once more, with a fresh round of attempts."""
    delivery = crud.retry_delivery(session, scope=scope, webhook_id=webhook_id, delivery_id=delivery_id,
                                   now=utcnow())
    session.commit()
    return delivery_public(delivery)
