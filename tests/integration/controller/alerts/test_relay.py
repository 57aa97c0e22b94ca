"""The alert relay against a real database (SQLite; PostgreSQL where marked), real Redis (database
0, keys under the tests' prefix) and real webhook receivers on 127.0.0.1: events reach the stream
in order and exactly the webhooks that want them, failed deliveries are retried until they land or
die, a receiver that never answers holds up nobody else, and only the leading relay writes."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from services.controller.alerts.relay import ALERT_RELAY, AlertRelay
from services.controller.scheduling import lease
from shared.clock import aware, utcnow
from shared.enums import AlertCode, Severity
from shared.metrics import ALERT_DELIVERIES
from shared.models import GLOBAL_DOMAIN_ID, AlertEvent, LeaderLease, Webhook, WebhookDelivery
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.support.alert_consumers import (
    STREAM_REDIS,
    Receiver,
    SilentReceiver,
    add_domain,
    raise_alerts,
    read_stream,
    stream_key,
)
from tests.support.clock import ManualClock
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis

ON_BOTH = pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

SECRET = "relay-test-secret-0123456789"
SECRET_KEY = "relay-test-secret-key"


@pytest.fixture
def settings(db_engine) -> Iterator[Settings]:
    with stream_key() as key:
        yield Settings(database_url=db_engine.url.render_as_string(hide_password=False), broker_url=STREAM_REDIS,
                       secret_key=SECRET_KEY, alert_stream_key=key, webhook_timeout_seconds=0.5,
                       webhook_backoff_seconds=0.02, webhook_backoff_max_seconds=0.1, webhook_max_attempts=50)


@pytest.fixture
def receivers() -> Iterator[list]:
    started: list = []
    yield started
    for receiver in started:
        receiver.stop()


def receiver(receivers: list, **kwargs) -> Receiver:
    started = Receiver(secret=SECRET, **kwargs).start()
    receivers.append(started)
    return started


def add_webhook(engine, url: str, *, domain_id: uuid.UUID = GLOBAL_DOMAIN_ID, codes=(), severities=(),
                enabled: bool = True, secret: str = SECRET) -> uuid.UUID:
    with Session(engine) as session:
        webhook = Webhook(domain_id=domain_id, url=url, codes=[str(c) for c in codes],
                          severities=[str(s) for s in severities], enabled=enabled,
                          secret_blob=SecretBox(SECRET_KEY).seal(secret.encode()))
        session.add(webhook)
        session.commit()
        return webhook.id


def deliveries(engine, webhook_id: uuid.UUID | None = None) -> list[WebhookDelivery]:
    with Session(engine) as session:
        query = select(WebhookDelivery).order_by(WebhookDelivery.event_seq)
        if webhook_id is not None:
            query = query.where(WebhookDelivery.webhook_id == webhook_id)
        return list(session.exec(query).all())


def outbox(engine) -> list[AlertEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AlertEvent).order_by(AlertEvent.seq)).all())


@pytest.fixture
def relays() -> Iterator[list[AlertRelay]]:
    made: list[AlertRelay] = []
    yield made
    for relay in made:
        relay.stop()


def relay(relays: list, engine, settings: Settings, **kwargs) -> AlertRelay:
    made = AlertRelay(engine, settings, **kwargs)
    relays.append(made)
    return made


def run_until(relay: AlertRelay, condition, *, timeout: float = 10.0, what: str):
    """Passes of ``relay`` (its loop, by hand) until ``condition()`` holds."""
    return wait_until(lambda: (relay.run_once(), condition())[1], timeout=timeout, what=what)


def counter(channel: str, outcome: str) -> float:
    return ALERT_DELIVERIES.labels(channel=channel, outcome=outcome)._value.get()


@ON_BOTH
def test_events_reach_the_stream_in_order_and_exactly_the_webhooks_whose_subtree_and_filters_match(
        db_engine, settings, relays, receivers):
    east = add_domain(db_engine, "East", GLOBAL_DOMAIN_ID)
    east_lab = add_domain(db_engine, "East Lab", east)
    west = add_domain(db_engine, "West", GLOBAL_DOMAIN_ID)
    hooks = {name: receiver(receivers) for name in ("global", "east", "west", "east-critical", "revoked", "off")}
    ids = {
        "global": add_webhook(db_engine, hooks["global"].url),
        "east": add_webhook(db_engine, hooks["east"].url, domain_id=east),
        "west": add_webhook(db_engine, hooks["west"].url, domain_id=west),
        "east-critical": add_webhook(db_engine, hooks["east-critical"].url, domain_id=east,
                                     severities=[Severity.CRITICAL]),
        "revoked": add_webhook(db_engine, hooks["revoked"].url, codes=[AlertCode.CERTIFICATE_REVOKED]),
        "off": add_webhook(db_engine, hooks["off"].url, enabled=False),
    }
    raise_alerts(db_engine, east_lab, 3, prefix="lab")  # F0853, major
    raise_alerts(db_engine, east, 2, code=AlertCode.CERTIFICATE_REVOKED, prefix="east")  # critical
    raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 1, prefix="hq")
    events = outbox(db_engine)
    assert len(events) == 6
    streamed_before = counter("stream", "delivered")

    one = relay(relays, db_engine, settings)
    report = one.run_once()
    assert report.leading and report.relayed == 6

    # The stream has every event, in the outbox's order, as the CloudEvents the store wrote.
    assert read_stream(settings.alert_stream_key) == [e.cloudevent for e in events]
    assert counter("stream", "delivered") - streamed_before == 6
    # Each webhook got a delivery for exactly the events its domain's subtree and filters let through.
    by_event = {e.id: e for e in events}
    expected = {
        "global": [e.id for e in events],
        "east": [e.id for e in events if e.domain_id in (east, east_lab)],
        "west": [],
        "east-critical": [e.id for e in events if e.domain_id == east],
        "revoked": [e.id for e in events if e.code == AlertCode.CERTIFICATE_REVOKED],
        "off": [],
    }
    assert {name: [d.event_id for d in deliveries(db_engine, ids[name])] for name in ids} == expected
    assert report.queued == sum(len(v) for v in expected.values())

    run_until(one, lambda: all(hooks[n].event_ids() == {str(i) for i in expected[n]} for n in hooks),
              what="every webhook's deliveries")
    for name, hook in hooks.items():
        for got in hook.got:
            assert got.verified, name
            assert got.headers["Content-Type"] == "application/cloudevents+json"
            assert got.headers["Certfleet-Event-Id"] == got.event["id"]
            assert got.event == by_event[uuid.UUID(got.event["id"])].cloudevent
    run_until(one, lambda: {d.state for d in deliveries(db_engine)} == {"delivered"}, what="the log to say so")
    assert all(e.relayed_at is not None for e in outbox(db_engine))
    assert one.run_once().relayed == 0  # nothing is relayed twice
    assert len(read_stream(settings.alert_stream_key)) == 6


def test_a_receiver_that_fails_for_a_while_then_recovers_gets_every_event_signed(db_engine, settings, relays,
                                                                                 receivers):
    flaky = receiver(receivers, answer=lambda n: 500 if n <= 25 else 204)
    webhook_id = add_webhook(db_engine, flaky.url)
    raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 10)
    failed_before = counter("webhook", "failed")

    one = relay(relays, db_engine, settings)
    run_until(one, lambda: len(flaky.event_ids()) == 10, what="every event at the recovered receiver")
    assert flaky.event_ids() == {str(e.id) for e in outbox(db_engine)}
    assert all(got.verified for got in flaky.got)
    run_until(one, lambda: {d.state for d in deliveries(db_engine, webhook_id)} == {"delivered"},
              what="every delivery logged as delivered")
    log = deliveries(db_engine, webhook_id)
    assert sum(d.attempts for d in log) == flaky.requests  # every request was counted as an attempt
    assert max(d.attempts for d in log) > 1
    assert {d.last_status for d in log} == {204}
    assert counter("webhook", "failed") - failed_before == flaky.requests - 10


def test_a_receiver_that_never_answers_does_not_delay_another_webhook(db_engine, settings, relays, receivers):
    silent = SilentReceiver()
    receivers.append(silent)
    quick = receiver(receivers)
    silent_id = add_webhook(db_engine, silent.url)
    add_webhook(db_engine, quick.url)
    raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 40)

    one = relay(relays, db_engine, replace(settings, webhook_timeout_seconds=5.0))
    run_until(one, lambda: len(quick.event_ids()) == 40, what="every event at the answering webhook")
    # Meanwhile the silent webhook's first requests are still waiting for their answer: none has
    # even failed yet, and the stream has everything.
    assert [d.attempts for d in deliveries(db_engine, silent_id)] == [0] * 40
    assert len(read_stream(settings.alert_stream_key)) == 40
    assert one.sender.free_lanes(silent_id) == 0  # its few lanes are all it holds


def test_a_delivery_that_keeps_failing_dies_shows_in_the_log_and_can_be_retried(api, settings, relays, receivers):
    status = {"code": 500}
    hook = receiver(receivers, answer=lambda _n: status["code"])
    created = api.ok("POST", f"/domains/{GLOBAL_DOMAIN_ID}/webhooks", {"url": hook.url, "secret": SECRET},
                     status=201)
    raise_alerts(api.engine, GLOBAL_DOMAIN_ID, 2)
    dead_before = counter("webhook", "dead")

    one = relay(relays, api.engine, replace(settings, secret_key=api.client.app.state.settings.secret_key,
                                            webhook_max_attempts=3))
    log_path = f"/domains/{GLOBAL_DOMAIN_ID}/webhooks/{created['id']}/deliveries"
    run_until(one, lambda: api.ok("GET", log_path, params={"state": "dead"})["total"] == 2,
              what="both deliveries dead")
    dead = api.ok("GET", log_path, params={"state": "dead"})["items"]
    assert {(d["attempts"], d["last_status"], d["last_error"]) for d in dead} == {
        (3, 500, "HTTP 500 Internal Server Error")}
    assert hook.requests == 6 and hook.got == []
    assert counter("webhook", "dead") - dead_before == 2
    assert api.ok("GET", f"/domains/{GLOBAL_DOMAIN_ID}/webhooks/{created['id']}")["dead"] == 2

    status["code"] = 200
    retried = api.ok("POST", f"{log_path}/{dead[0]['id']}/retry")
    assert (retried["state"], retried["attempts"]) == ("pending", 0)
    run_until(one, lambda: len(hook.got) == 1, what="the retried delivery at the receiver")
    assert hook.got[0].event["id"] == dead[0]["event_id"] and hook.got[0].verified
    run_until(one, lambda: api.ok("GET", log_path, params={"state": "delivered"})["total"] == 1,
              what="the retried delivery logged as delivered")
    assert api.ok("GET", log_path, params={"state": "dead"})["total"] == 1


@ON_BOTH
def test_of_two_relays_one_leads_and_a_deposed_one_writes_nothing(db_engine, settings, relays):
    clock = ManualClock()
    a = relay(relays, db_engine, settings, clock=clock, holder="a")
    b = relay(relays, db_engine, settings, clock=clock, holder="b")
    raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 3)

    assert a.run_once().relayed == 3
    assert not b.run_once().leading  # a leads: b does nothing
    raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 2, prefix="late")
    assert not b.run_once().leading
    assert len(read_stream(settings.alert_stream_key)) == 3

    # a stalls past its lease; b takes over. a, still believing it leads, is stopped by the fence.
    clock.advance(settings.scheduler_lease_seconds + 1)
    with Session(db_engine) as session:
        assert lease.acquire(session, name=ALERT_RELAY, holder="b", now=clock(),
                             lease_seconds=settings.scheduler_lease_seconds) is not None
    assert a.leadership is not None
    stale = a.lead()
    assert not stale.leading and stale.relayed == 0 and a.leadership is None
    assert len(read_stream(settings.alert_stream_key)) == 3
    assert sum(e.relayed_at is None for e in outbox(db_engine)) == 2

    assert b.run_once().relayed == 2
    assert len(read_stream(settings.alert_stream_key)) == 5
    # A relay that stops hands the lease back: the other leads at once, not a lease later.
    b.stop()
    assert a.run_once().leading
    with Session(db_engine) as session:
        assert session.get(LeaderLease, ALERT_RELAY).holder == "a"


def test_the_relay_keeps_its_short_pace_while_it_has_work_and_slows_down_when_idle(db_engine, settings, relays,
                                                                                 receivers):
    settings = replace(settings, alert_relay_interval_seconds=0.25, alert_relay_idle_seconds=1.5)
    clock = ManualClock()
    a = relay(relays, db_engine, settings, clock=clock, holder="a")
    b = relay(relays, db_engine, settings, clock=clock, holder="b")
    assert a.wait_after(a.run_once()) == 1.5  # leading, nothing to do
    assert b.wait_after(b.run_once()) == 1.5  # not leading: it only asks for the lease again

    hook = receiver(receivers)
    add_webhook(db_engine, hook.url)
    raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 2)
    working = a.run_once()
    assert working.relayed == 2 and working.sent == 2 and a.wait_after(working) == 0.25
    run_until(a, lambda: all(d.state == "delivered" for d in deliveries(db_engine)),
              what="the deliveries written as delivered")
    # Their outcomes written, nothing is left in flight: the next pass is idle.
    assert a.wait_after(a.run_once()) == 1.5


def test_without_redis_events_still_go_to_webhooks(db_engine, settings, relays, receivers):
    from structlog.testing import capture_logs

    from shared.logging import configure_logging

    hook = receiver(receivers)
    add_webhook(db_engine, hook.url)
    raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 3)
    configure_logging("INFO")  # another test of this process may have left the level at WARNING
    with capture_logs() as logs:
        one = relay(relays, db_engine, replace(settings, broker_url=""))
    assert one.stream is None
    assert [e["event"] for e in logs if "without Redis" in e["event"]] != []
    run_until(one, lambda: len(hook.event_ids()) == 3, what="the events at the webhook")
    assert all(e.relayed_at is not None for e in outbox(db_engine))
    assert read_stream(settings.alert_stream_key) == []


def test_failed_attempts_back_off_exponentially_with_jitter_then_die(db_engine, settings):
    """The outcomes' bookkeeping with a ManualClock and a seeded random source."""
    from datetime import timedelta

    from services.controller.alerts import outbox as relay_outbox
    from services.controller.alerts.backoff import RetryPolicy
    from services.controller.alerts.sender import Outcome

    clock, policy = ManualClock(), RetryPolicy(base_seconds=1, max_seconds=8, max_attempts=6)
    webhook_id = add_webhook(db_engine, "http://127.0.0.1:9/hook")
    raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 1)
    event = outbox(db_engine)[0]
    with Session(db_engine) as session:
        relay_outbox.queue_deliveries(session, [event], [relay_outbox.subscriber(session.get(Webhook, webhook_id))],
                                      relay_outbox.domain_tree(session), now=clock())
        session.commit()
    delivery_id = deliveries(db_engine)[0].id
    expected_rng, rng = random.Random(7), random.Random(7)
    waits = []
    for attempt in range(1, 7):
        failed = Outcome(delivery_id, webhook_id, clock(), status=503, error="HTTP 503 Service Unavailable")
        with Session(db_engine) as session:
            tally = relay_outbox.record_outcomes(session, [failed], policy=policy, now=clock(), rng=rng)
            session.commit()
        row = deliveries(db_engine)[0]
        if attempt < 6:
            ceiling = min(8, 2 ** (attempt - 1))
            wait = ceiling / 2 + expected_rng.uniform(0, ceiling / 2)
            assert (tally.failed, row.state, row.attempts) == (1, "pending", attempt)
            assert row.next_attempt_at == clock() + timedelta(seconds=wait)
            waits.append(wait)
        else:
            assert (tally.dead, row.state, row.attempts, row.last_status) == (1, "dead", 6, 503)
        clock.advance(10)
    assert waits[0] >= 0.5 and waits[-1] <= 8 and waits[-1] >= 4  # from half the base up to the cap


def test_pruning_drops_old_relayed_events_and_finished_deliveries_but_keeps_what_is_pending(db_engine, settings):
    from datetime import timedelta

    from services.controller.alerts import outbox as relay_outbox

    clock = ManualClock()
    raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 4)
    events = outbox(db_engine)
    webhook_id = add_webhook(db_engine, "http://127.0.0.1:9/hook")
    with Session(db_engine) as session:
        relay_outbox.queue_deliveries(session, events, [relay_outbox.subscriber(session.get(Webhook, webhook_id))],
                                      relay_outbox.domain_tree(session), now=clock())
        relay_outbox.mark_relayed(session, [e.seq for e in events], now=clock())
        for event, state in zip(events, ("delivered", "dead", "pending", "delivered"), strict=True):
            session.execute(update(WebhookDelivery).where(WebhookDelivery.event_id == event.id).values(state=state))
        session.commit()
    later = clock() + timedelta(days=settings.alert_event_retention_days, seconds=1)
    with Session(db_engine) as session:
        assert relay_outbox.prune(session, before=clock()) == (0, 0)  # nothing that old yet
        assert relay_outbox.prune(session, before=later) == (3, 3)
        session.commit()
    assert [e.id for e in outbox(db_engine)] == [events[2].id]  # its delivery is still pending
    assert [d.state for d in deliveries(db_engine)] == ["pending"]


def test_a_backlog_of_several_pages_reaches_the_stream_in_order_and_the_webhook_whole(db_engine, settings, relays,
                                                                                      receivers):
    hook = receiver(receivers)
    add_webhook(db_engine, hook.url)
    raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 1200)
    one = relay(relays, db_engine, settings)
    run_until(one, lambda: len(hook.event_ids()) == 1200, what="every event at the webhook")
    assert [e["id"] for e in read_stream(settings.alert_stream_key)] == [str(e.id) for e in outbox(db_engine)]
    assert all(got.verified for got in hook.got)


def test_the_controller_runs_the_relay_beside_its_scheduler_and_hands_its_lease_back(db_engine, settings,
                                                                                     stub_broker, receivers):
    from fastapi.testclient import TestClient

    from services.controller.app import create_app

    hook = receiver(receivers)
    add_webhook(db_engine, hook.url)
    app = create_app(settings, engine=db_engine, broker=stub_broker, start_scheduler=True)
    assert isinstance(app.state.alert_relay, AlertRelay)
    assert create_app(settings, engine=db_engine, broker=stub_broker).state.alert_relay is None
    with TestClient(app):
        raise_alerts(db_engine, GLOBAL_DOMAIN_ID, 3)
        # (The scheduler's alert-conditions pass may clear these made-up alerts meanwhile: more events.)
        raised = {str(e.id) for e in outbox(db_engine) if e.type == "io.certfleet.alert.raised"}
        assert len(raised) == 3
        wait_until(lambda: raised <= hook.event_ids(), what="the events at the webhook")
        wait_until(lambda: raised <= {e["id"] for e in read_stream(settings.alert_stream_key)},
                   what="the events on the stream")
    with Session(db_engine) as session:
        relay_lease = session.get(LeaderLease, ALERT_RELAY)
        assert relay_lease.holder == app.state.alert_relay.holder
        assert aware(relay_lease.expires_at) < utcnow()  # given up at the stop: another controller leads at once
