"""Webhooks: made in a domain, seen (and deleted) from it and every domain above it, never from
a sibling. The secret is stored sealed with the installation's SecretBox and never returned."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, func
from sqlmodel import Session, select

from services.controller.api.schemas.webhooks import SECRET_MIN, WebhookCreate
from services.controller.crud.domains import ensure_not_being_deleted
from services.controller.rules.checks import check_http_url
from services.controller.rules.scope import DomainScope
from shared.enums import DeliveryState
from shared.errors import ConflictError, NotFoundError, ValidationError
from shared.models import Webhook, WebhookDelivery
from shared.secrets import SecretBox


def _in_scope(scope: DomainScope):
    return None if scope.is_root else Webhook.domain_id.in_(scope.subtree)


def check_url(url: str) -> str:
    try:
        return check_http_url(url, field="url")
    except ValidationError as exc:
        if exc.code == "invalid_url":  # credentials in the URL keep their own code
            raise ValidationError(exc.message, code="webhook_url_invalid") from None
        raise


def create_webhook(session: Session, *, scope: DomainScope, data: WebhookCreate, box: SecretBox,
                   created_by: str, now: datetime) -> Webhook:
    ensure_not_being_deleted(session, scope.domain_id, what="a new webhook")
    url = check_url(data.url)
    secret = data.secret.get_secret_value()
    if len(secret) < SECRET_MIN:
        raise ValidationError(f"the webhook secret has {len(secret)} characters; it needs at least {SECRET_MIN} "
                              "(e.g. the output of `openssl rand -hex 32`)", code="webhook_secret_too_short")
    webhook = Webhook(domain_id=scope.domain_id, name=(data.name or "").strip(), url=url,
                      codes=sorted({c.value for c in data.codes}),
                      severities=sorted({s.value for s in data.severities}),
                      secret_blob=box.seal(secret.encode()), enabled=data.enabled, created_by=created_by,
                      created_at=now)
    session.add(webhook)
    session.flush()
    return webhook


def get_webhook(session: Session, *, scope: DomainScope, webhook_id: uuid.UUID) -> Webhook:
    webhook = session.get(Webhook, webhook_id)
    if webhook is None or not scope.sees(webhook.domain_id):
        raise NotFoundError(f"webhook {webhook_id} not found in this domain or its subdomains",
                            code="webhook_not_found")
    return webhook


def list_webhooks(session: Session, *, scope: DomainScope, offset: int, limit: int) -> tuple[list[Webhook], int]:
    conditions = [c for c in (_in_scope(scope),) if c is not None]
    total = session.exec(select(func.count()).select_from(Webhook).where(*conditions)).one()
    rows = session.exec(select(Webhook).where(*conditions).order_by(Webhook.created_at, Webhook.id)
                        .offset(offset).limit(limit)).all()
    return list(rows), total


def delivery_counts(session: Session, webhook_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Per webhook, its deliveries by state."""
    counts: dict[uuid.UUID, dict[str, int]] = {w: {} for w in webhook_ids}
    if webhook_ids:
        rows = session.execute(select(WebhookDelivery.webhook_id, WebhookDelivery.state, func.count())
                               .where(WebhookDelivery.webhook_id.in_(webhook_ids))
                               .group_by(WebhookDelivery.webhook_id, WebhookDelivery.state)).all()
        for webhook_id, state, count in rows:
            counts[webhook_id][state] = count
    return counts


def delete_webhook(session: Session, *, scope: DomainScope, webhook_id: uuid.UUID) -> None:
    """The webhook and its delivery log; a request in flight may still reach the receiver."""
    webhook = get_webhook(session, scope=scope, webhook_id=webhook_id)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
                    .execution_options(synchronize_session=False))
    session.delete(webhook)


def list_deliveries(session: Session, *, scope: DomainScope, webhook_id: uuid.UUID, state: DeliveryState | None,
                    offset: int, limit: int) -> tuple[list[WebhookDelivery], int]:
    """The webhook's delivery log, newest first."""
    webhook = get_webhook(session, scope=scope, webhook_id=webhook_id)
    conditions = [WebhookDelivery.webhook_id == webhook.id]
    if state is not None:
        conditions.append(WebhookDelivery.state == DeliveryState(state).value)
    total = session.exec(select(func.count()).select_from(WebhookDelivery).where(*conditions)).one()
    rows = session.exec(select(WebhookDelivery).where(*conditions)
                        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.event_seq.desc())
                        .offset(offset).limit(limit)).all()
    return list(rows), total


def retry_delivery(session: Session, *, scope: DomainScope, webhook_id: uuid.UUID, delivery_id: uuid.UUID,
                   now: datetime) -> WebhookDelivery:
    """A dead delivery back to pending, due now, with a fresh count of attempts (the last error stays
    in the log until the next attempt)."""
    webhook = get_webhook(session, scope=scope, webhook_id=webhook_id)
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.webhook_id != webhook.id:
        raise NotFoundError(f"delivery {delivery_id} not found in webhook {webhook.id}'s log",
                            code="delivery_not_found")
    if delivery.state != DeliveryState.DEAD.value:
        raise ConflictError(f"delivery {delivery_id} is {delivery.state}, not dead: only a dead delivery is retried "
                            "by hand (a pending one is retried by itself)", code="delivery_not_dead")
    delivery.state, delivery.attempts, delivery.next_attempt_at = DeliveryState.PENDING.value, 0, now
    session.add(delivery)
    return delivery
