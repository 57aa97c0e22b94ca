"""The alert relay: moves alert events from the outbox (``alert_event``, written with the alert's
change) to the consumers, at least once, losing none.

One relay leads among the controllers, holding the ``alert-relay`` lease
(:mod:`services.controller.scheduling.lease`); every transaction it commits passes the lease's
fence, so a relay that lost its lease writes nothing. Each pass, as the leader:

1. writes the outcomes of the webhook requests that finished since the last pass (delivered, or
   a failed attempt: retried after a capped, jittered backoff, dead after the last attempt);
2. relays the unrelayed events in ``seq`` order, a page per transaction: each is added to the
   Redis stream (before the commit: a crash in between sends an event twice, never loses it;
   consumers drop repeats by the CloudEvent id), a pending delivery is made for every enabled
   webhook whose domain's subtree holds the event's domain and whose filters let it through,
   and the event is marked relayed;
3. hands the due deliveries to the :class:`~services.controller.alerts.sender.WebhookSender`,
   which sends them on its threads, a few at a time per webhook;
4. now and then, deletes relayed events and finished deliveries older than the retention.

Without Redis (the embedded stack's in-process broker) there is no stream: events go to the
webhooks alone.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.controller.alerts import outbox
from services.controller.alerts.backoff import RetryPolicy
from services.controller.alerts.sender import Parcel, Target, WebhookSender
from services.controller.alerts.stream import AlertStream
from services.controller.scheduling import lease
from services.controller.scheduling.scheduler import default_holder
from shared.clock import utcnow
from shared.errors import ConfigurationError
from shared.logging import get_logger
from shared.metrics import ALERT_DELIVERIES
from shared.periodic import Periodic
from shared.secrets import SecretBox
from shared.settings import Settings


def log():
    # A logger per use follows the logging configuration in force: structlog would pin a
    # module-level logger to the configuration of its first use.
    return get_logger(__name__)

#: The relay's lease (one relay leads among the controllers).
ALERT_RELAY = "alert-relay"
#: Seconds a pass may spend relaying pages of a backlog before it sends and sleeps.
RELAY_BUDGET_SECONDS = 2.0
#: Seconds between prunes.
PRUNE_EVERY_SECONDS = 300.0


@dataclass
class PassReport:
    """What one pass did."""

    leading: bool = False
    relayed: int = 0
    queued: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    pruned_events: int = 0
    pruned_deliveries: int = 0


class AlertRelay(Periodic):
    thread_name = "certfleet-alert-relay"

    def __init__(self, engine: Engine, settings: Settings, *, clock: Callable[[], datetime] = utcnow,
                 rng: random.Random | None = None, holder: str | None = None,
                 stream: AlertStream | None = None) -> None:
        """``stream``: the Redis stream to write to; by default the settings' (none without a broker URL)."""
        self.engine, self.settings, self.clock = engine, settings, clock
        self.rng = rng or random.Random()
        self.holder = holder or default_holder()
        self.policy = RetryPolicy.from_settings(settings)
        self.lease_seconds = settings.scheduler_lease_seconds
        self.stream = stream if stream is not None else AlertStream.from_settings(settings)
        self.sender = WebhookSender(timeout_seconds=settings.webhook_timeout_seconds, clock=clock)
        self.box = SecretBox(settings.secret_key)
        self.leadership: lease.Leadership | None = None
        self._next_prune: datetime | None = None
        self._redis_down = False
        self._unreadable: set[uuid.UUID] = set()
        if self.stream is None:
            log().info("alert relay without Redis (CERTFLEET_BROKER_URL is empty): alert events go to webhooks only, "
                     "there is no alert stream")
        super().__init__(every_seconds=settings.alert_relay_interval_seconds)

    # --- one pass ------------------------------------------------------------------------------

    def run_once(self) -> PassReport:
        """Take or renew the lease; as the leader, do a pass."""
        with Session(self.engine, expire_on_commit=False) as session:
            held = lease.acquire(session, name=ALERT_RELAY, holder=self.holder, now=self.clock(),
                                 lease_seconds=self.lease_seconds)
        previous, self.leadership = self.leadership, held
        if held is None:
            if previous is not None:
                log().warning("alert relay lease lost to another controller", holder=self.holder)
                self.sender.forget()
            return PassReport()
        if previous is None or previous.token != held.token:
            log().info("leading the alert relay", holder=self.holder, token=held.token)
        return self.lead()

    def lead(self) -> PassReport:
        """One pass as the leader this relay believes it is: every transaction passes the fence,
        so once another relay took the lease, the pass ends without writing."""
        report = PassReport(leading=True)
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                self._record(session, report)
                self._relay(session, report)
                self._send(session, report)
                self._prune(session, report)
            except lease.LeadershipLost:
                session.rollback()
                log().warning("alert relay pass dropped: the lease went to another controller", holder=self.holder)
                report.leading, self.leadership = False, None
                self.sender.forget()
        return report

    def _fence(self, session: Session) -> None:
        lease.fence(session, self.leadership, now=self.clock(), lease_seconds=self.lease_seconds)

    def _record(self, session: Session, report: PassReport) -> None:
        outcomes = self.sender.finished()
        if not outcomes:
            return
        try:
            self._fence(session)
            tally = outbox.record_outcomes(session, outcomes, policy=self.policy, now=self.clock(), rng=self.rng)
            session.commit()
        finally:  # written or dropped (a later pass sends those deliveries again): no longer in flight
            self.sender.release(outcomes)
        report.delivered, report.failed, report.dead = tally.delivered, tally.failed, tally.dead
        for outcome, count in (("delivered", tally.delivered), ("failed", tally.failed), ("dead", tally.dead)):
            ALERT_DELIVERIES.labels(channel="webhook", outcome=outcome).inc(count)
        if tally.dead:
            log().warning("webhook deliveries dead after their last attempt", count=tally.dead,
                        max_attempts=self.policy.max_attempts)

    def _relay(self, session: Session, report: PassReport) -> None:
        tree = subscribers = None
        started = time.monotonic()
        while time.monotonic() - started < RELAY_BUDGET_SECONDS:
            self._fence(session)  # first: on PostgreSQL it locks the lease row until the commit
            events = outbox.unrelayed(session)
            if not events:
                session.rollback()
                return
            if tree is None:  # read once there is something to relay: most passes find nothing
                tree = outbox.domain_tree(session)
                subscribers = [outbox.subscriber(w) for w in outbox.enabled_webhooks(session)]
            if self.stream is not None and not self._to_stream([outbox.event_json(e.cloudevent) for e in events]):
                session.rollback()
                return
            now = self.clock()
            report.queued += outbox.queue_deliveries(session, events, subscribers, tree, now=now)
            outbox.mark_relayed(session, [e.seq for e in events], now=now)
            session.commit()
            report.relayed += len(events)
            if self.stream is not None:
                ALERT_DELIVERIES.labels(channel="stream", outcome="delivered").inc(len(events))
            if len(events) < outbox.PAGE:
                return

    def _to_stream(self, bodies: list[str]) -> bool:
        try:
            self.stream.append(bodies)
        except redis.RedisError as exc:
            ALERT_DELIVERIES.labels(channel="stream", outcome="failed").inc(len(bodies))
            if not self._redis_down:  # once per outage: the next passes try again quietly
                log().warning("alert stream unreachable: alert events wait in the database until Redis answers",
                            key=self.stream.key, error=f"{type(exc).__name__}: {exc}")
            self._redis_down = True
            return False
        if self._redis_down:
            log().info("alert stream reachable again", key=self.stream.key)
            self._redis_down = False
        return True

    def _send(self, session: Session, report: PassReport) -> None:
        now = self.clock()
        for webhook in outbox.enabled_webhooks(session):
            free = self.sender.free_lanes(webhook.id)
            if not free:
                continue
            target = self._target(webhook)
            if target is None:
                continue
            busy = self.sender.in_flight(webhook.id)
            wanted = free * self.sender.lane_size
            due = [d for d in outbox.due_deliveries(session, webhook.id, now=now, limit=wanted + len(busy))
                   if d.delivery_id not in busy][:wanted]
            if due:
                report.sent += self.sender.send(target, [
                    Parcel(d.delivery_id, str(d.event_id), outbox.event_json(d.cloudevent).encode()) for d in due])
        session.rollback()  # read only

    def _target(self, webhook) -> Target | None:
        try:
            secret = self.box.open(webhook.secret_blob).decode()
        except ConfigurationError as exc:
            if webhook.id not in self._unreadable:
                log().error("webhook secret unreadable: its deliveries wait", webhook_id=str(webhook.id),
                          error=exc.message)
                self._unreadable.add(webhook.id)
            return None
        self._unreadable.discard(webhook.id)
        return Target(webhook_id=webhook.id, url=webhook.url, secret=secret)

    def _prune(self, session: Session, report: PassReport) -> None:
        now = self.clock()
        if self._next_prune is not None and now < self._next_prune:
            return
        self._next_prune = now + timedelta(seconds=PRUNE_EVERY_SECONDS)
        self._fence(session)
        report.pruned_events, report.pruned_deliveries = outbox.prune(
            session, before=now - timedelta(days=self.settings.alert_event_retention_days))
        session.commit()
        if report.pruned_events or report.pruned_deliveries:
            log().info("alert events and webhook deliveries pruned", events=report.pruned_events,
                     deliveries=report.pruned_deliveries, retention_days=self.settings.alert_event_retention_days)

    # --- the thread ----------------------------------------------------------------------------

    def wait_after(self, result: object) -> float:
        """The short interval while there is work (events relayed, deliveries sent or still in
        flight); the idle one after a pass that found none, or as a relay that does not lead."""
        report = result if isinstance(result, PassReport) else PassReport()
        working = report.leading and (report.relayed or report.queued or report.sent or report.delivered
                                      or report.failed or report.dead or self.sender.busy())
        return self.every_seconds if working else self.settings.alert_relay_idle_seconds

    def pass_failed(self) -> None:
        self.leadership = None  # a failed pass may have lost the lease: take it again first
        self.sender.forget()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the passes, write the outcomes already in, give the lease up (another controller
        takes over at once) and stop sending."""
        super().stop(timeout)
        if self.leadership is not None:
            try:
                with Session(self.engine, expire_on_commit=False) as session:
                    self._record(session, PassReport())
                    lease.release(session, self.leadership, now=self.clock())
            except Exception:  # the lease then simply runs out; unwritten outcomes are sent again
                log().warning("could not hand the alert relay lease back", exc_info=True)
            self.leadership = None
        self.sender.close()
        if self.stream is not None:
            self.stream.close()
