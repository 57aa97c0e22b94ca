"""How long a failed webhook delivery waits before its next attempt, and when it is given up."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from services.controller.alerts.backoff import RetryPolicy
from shared.enums import DeliveryState
from tests.support.clock import ManualClock


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
