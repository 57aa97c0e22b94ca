"""The alert relay's pure rules: which webhooks an event goes to, how long a failed delivery
waits, and the headers that let a receiver check a delivery."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest

from services.cli.alert_watch import describe
from services.controller.alerts.backoff import RetryPolicy
from services.controller.alerts.fanout import DomainTree, Subscriber, recipients
from services.controller.alerts.sender import Target, signed_headers
from shared import alerts
from shared.enums import DeliveryState
from tests.support.clock import ManualClock

ROOT, EAST, LAB, WEST = (uuid.uuid4() for _ in range(4))
TREE = [(ROOT, None), (EAST, ROOT), (LAB, EAST), (WEST, ROOT)]


def hook(domain, codes=(), severities=()) -> Subscriber:
    return Subscriber(webhook_id=uuid.uuid4(), domain_id=domain, codes=frozenset(codes),
                      severities=frozenset(severities))


def test_an_event_goes_to_the_webhooks_of_its_domain_and_every_domain_above_it_that_want_it():
    tree = DomainTree(TREE)
    root, east, lab, west = hook(ROOT), hook(EAST), hook(LAB), hook(WEST)
    critical, revoked = hook(EAST, severities=["critical"]), hook(ROOT, codes=["CF-CERT-REVOKED"])
    everyone = [root, east, lab, west, critical, revoked]

    def to(domain, code="F0853", severity="major"):
        return set(recipients(everyone, tree, domain_id=domain, code=code, severity=severity))

    assert to(LAB) == {root.webhook_id, east.webhook_id, lab.webhook_id}
    assert to(WEST) == {root.webhook_id, west.webhook_id}
    assert to(EAST, severity="critical") == {root.webhook_id, east.webhook_id, critical.webhook_id}
    assert to(ROOT, code="CF-CERT-REVOKED") == {root.webhook_id, revoked.webhook_id}
    # An alert that outlived its domain still reaches the root's webhooks.
    assert to(uuid.uuid4()) == {root.webhook_id}


def test_a_cycle_in_bad_data_does_not_loop():
    a, b = uuid.uuid4(), uuid.uuid4()
    assert DomainTree([(a, b), (b, a)]).holders(a) == {a, b}


def test_the_wait_after_a_failure_doubles_up_to_the_cap_and_is_never_immediate():
    policy = RetryPolicy(base_seconds=1.0, max_seconds=30.0, max_attempts=12)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (11, 30), (1000, 30)]:
        waits = [policy.delay(attempt, rng=random.Random(seed)) for seed in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 4  # jittered: a fleet's retries spread out
    with pytest.raises(ValueError):
        policy.delay(0, rng=random.Random(1))


def test_a_delivery_is_dead_after_its_last_attempt():
    clock, policy = ManualClock(), RetryPolicy(base_seconds=2.0, max_seconds=60.0, max_attempts=3)
    state, at = policy.after_failure(2, now=clock(), rng=random.Random(3))
    assert state is DeliveryState.PENDING
    assert clock() + timedelta(seconds=2) <= at <= clock() + timedelta(seconds=4)
    assert policy.after_failure(3, now=clock(), rng=random.Random(3)) == (DeliveryState.DEAD, clock())


def test_a_delivery_s_headers_let_the_receiver_check_it_and_the_secret_stays_out_of_reprs():
    body = b'{"id":"e1"}'
    headers = signed_headers("a-webhook-secret-123", event_id="e1", body=body, timestamp=1_900_000_000)
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert headers[alerts.EVENT_ID_HEADER] == "e1"
    assert alerts.verify("a-webhook-secret-123", timestamp=headers[alerts.TIMESTAMP_HEADER],
                         signature=headers[alerts.SIGNATURE_HEADER], body=body, now=1_900_000_010)
    assert not alerts.verify("another-secret-1234", timestamp=headers[alerts.TIMESTAMP_HEADER],
                             signature=headers[alerts.SIGNATURE_HEADER], body=body, now=1_900_000_010)
    assert "a-webhook-secret-123" not in repr(Target(uuid.uuid4(), "https://x.example/", "a-webhook-secret-123"))


def test_watch_shows_an_event_in_one_line():
    event = {"time": "2030-01-01T12:00:00Z", "type": "io.certfleet.alert.cleared",
             "data": {"code": "CF-CA-UNREACHABLE", "severity": "major", "device_name": "", "trustpoint_name": "",
                      "resource": "https://ca.example.com:8443", "description": "CA unreachable: timed out"}}
    assert describe(event).split() == ["2030-01-01T12:00:00Z", "cleared", "CF-CA-UNREACHABLE", "major",
                                       "https://ca.example.com:8443", "CA", "unreachable:", "timed", "out"]
