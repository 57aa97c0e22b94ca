"""The relay's reads and writes: the outbox's unrelayed events, the webhook deliveries made from
them, the outcomes of their attempts, and pruning. Nothing here commits: the relay does, behind
its lease's fence."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, update
from sqlmodel import Session, select

from services.controller.alerts.backoff import RetryPolicy
from services.controller.alerts.fanout import DomainTree, Subscriber, recipients
from services.controller.alerts.sender import Outcome
from shared.db import insert_rows
from shared.enums import DeliveryState
from shared.models import AlertEvent, Domain, Webhook, WebhookDelivery

#: Events the relay takes per transaction.
PAGE = 500
#: Ids per IN list.
_CHUNK = 1000


def event_json(cloudevent: dict) -> str:
    """The CloudEvent as consumers get it: the stream entry's field and a webhook's body, byte for byte."""
    return json.dumps(cloudevent, separators=(",", ":"), ensure_ascii=False)


def unrelayed(session: Session, *, limit: int = PAGE) -> list[AlertEvent]:
    return list(session.exec(select(AlertEvent).where(AlertEvent.relayed_at.is_(None))
                             .order_by(AlertEvent.seq).limit(limit)).all())


def domain_tree(session: Session) -> DomainTree:
    return DomainTree((row[0], row[1]) for row in session.execute(select(Domain.id, Domain.parent_id)).all())


def enabled_webhooks(session: Session) -> list[Webhook]:
    return list(session.exec(select(Webhook).where(Webhook.enabled.is_(True)).order_by(Webhook.created_at)).all())


def subscriber(webhook: Webhook) -> Subscriber:
    return Subscriber(webhook_id=webhook.id, domain_id=webhook.domain_id, codes=frozenset(webhook.codes or ()),
                      severities=frozenset(webhook.severities or ()))


def queue_deliveries(session: Session, events: Sequence[AlertEvent], subscribers: Sequence[Subscriber],
                     tree: DomainTree, *, now: datetime) -> int:
    """A pending delivery, due now, of each event for each webhook that wants it; returns how many."""
    rows = [dict(id=uuid.uuid4(), webhook_id=webhook_id, event_id=event.id, event_seq=event.seq,
                 event_type=event.type, alert_id=event.alert_id, state=DeliveryState.PENDING.value, attempts=0,
                 next_attempt_at=now, last_status=None, last_error="", created_at=now, delivered_at=None)
            for event in events
            for webhook_id in recipients(subscribers, tree, domain_id=event.domain_id, code=event.code,
                                         severity=event.severity)]
    if rows:
        insert_rows(session, WebhookDelivery.__table__, rows)
    return len(rows)


def mark_relayed(session: Session, seqs: Sequence[int], *, now: datetime) -> None:
    for start in range(0, len(seqs), _CHUNK):
        session.execute(update(AlertEvent).where(AlertEvent.seq.in_(seqs[start:start + _CHUNK]))
                        .values(relayed_at=now).execution_options(synchronize_session=False))


@dataclass(frozen=True)
class Due:
    delivery_id: uuid.UUID
    event_id: uuid.UUID
    cloudevent: dict


def due_deliveries(session: Session, webhook_id: uuid.UUID, *, now: datetime, limit: int) -> list[Due]:
    """The webhook's pending deliveries whose next attempt is due, oldest event first."""
    rows = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.event_id, AlertEvent.cloudevent)
        .join(AlertEvent, AlertEvent.seq == WebhookDelivery.event_seq)
        .where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.state == DeliveryState.PENDING.value,
               WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.event_seq).limit(limit)
    ).all()
    return [Due(row[0], row[1], row[2]) for row in rows]


@dataclass
class Tally:
    delivered: int = 0
    failed: int = 0
    dead: int = 0


def record_outcomes(session: Session, outcomes: Sequence[Outcome], *, policy: RetryPolicy, now: datetime,
                    rng: random.Random) -> Tally:
    """Write the attempts' outcomes: delivered, or one more failed attempt (retried after a
    backoff, or dead after the last). A delivery no longer pending (its webhook deleted) is skipped."""
    attempted = {o.delivery_id: o for o in outcomes if o.attempted}
    ids = list(attempted)
    attempts: dict[uuid.UUID, int] = {}
    for start in range(0, len(ids), _CHUNK):
        attempts.update(session.execute(
            select(WebhookDelivery.id, WebhookDelivery.attempts)
            .where(WebhookDelivery.id.in_(ids[start:start + _CHUNK]),
                   WebhookDelivery.state == DeliveryState.PENDING.value)).all())
    tally, changes = Tally(), []
    for delivery_id, made in attempts.items():
        outcome, count = attempted[delivery_id], made + 1
        change = dict(id=delivery_id, attempts=count, last_status=outcome.status, last_error=outcome.error)
        if outcome.ok:
            change.update(state=DeliveryState.DELIVERED.value, delivered_at=outcome.at)
            tally.delivered += 1
        else:
            state, next_attempt_at = policy.after_failure(count, now=now, rng=rng)
            change.update(state=state.value, next_attempt_at=next_attempt_at)
            if state is DeliveryState.DEAD:
                tally.dead += 1
            else:
                tally.failed += 1
        changes.append(change)
    for key_set in {tuple(sorted(c)) for c in changes}:  # one executemany per shape
        session.execute(update(WebhookDelivery), [c for c in changes if tuple(sorted(c)) == key_set])
    return tally


def prune(session: Session, *, before: datetime) -> tuple[int, int]:
    """Delete events relayed before ``before`` (unless a delivery of theirs is still pending) and
    the finished deliveries (delivered or dead) made before it. Returns (events, deliveries)."""
    finished = (DeliveryState.DELIVERED.value, DeliveryState.DEAD.value)
    deliveries = session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.state.in_(finished), WebhookDelivery.created_at < before)
        .execution_options(synchronize_session=False)).rowcount
    pending = exists().where(WebhookDelivery.event_seq == AlertEvent.seq,
                             WebhookDelivery.state == DeliveryState.PENDING.value)
    events = session.execute(
        delete(AlertEvent).where(AlertEvent.relayed_at < before, ~pending)
        .execution_options(synchronize_session=False)).rowcount
    return events, deliveries
