"""Retry delays: exponential, capped, jittered, repeatable with a seed, and never earlier
than a device's Retry-After."""

from __future__ import annotations

import random

import pytest

from services.worker.retry_policy import RetryPolicy
from shared.settings import Settings


def test_ceiling_doubles_per_attempt_up_to_the_cap():
    policy = RetryPolicy(base_ms=500, max_ms=30_000)
    assert [policy.ceiling_ms(n) for n in range(1, 9)] == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
    assert policy.ceiling_ms(10_000) == 30_000  # no overflow, no huge intermediate numbers


@pytest.mark.parametrize("jitter, low_fraction", [("full", 0.0), ("equal", 0.5)])
def test_jittered_delays_stay_within_their_band_and_spread_out(jitter, low_fraction):
    policy = RetryPolicy(base_ms=1000, max_ms=8000, jitter=jitter)
    rng = random.Random(7)
    for attempt in range(1, 7):
        ceiling = policy.ceiling_ms(attempt)
        delays = [policy.delay_ms(attempt, rng=rng) for _ in range(500)]
        assert min(delays) >= ceiling * low_fraction
        assert max(delays) <= ceiling
        # Spread: a fleet that failed together does not come back together.
        assert len(set(delays)) > 100


def test_same_seed_same_delays():
    policy = RetryPolicy(base_ms=200, max_ms=5000)
    first = [policy.delay_ms(n, rng=random.Random(42)) for n in range(1, 6)]
    second = [policy.delay_ms(n, rng=random.Random(42)) for n in range(1, 6)]
    assert first == second


def test_retry_after_is_a_floor_even_past_the_cap():
    policy = RetryPolicy(base_ms=100, max_ms=1000)
    rng = random.Random(1)
    assert policy.delay_ms(1, rng=rng, retry_after=3) == 3000
    assert policy.delay_ms(1, rng=rng, retry_after=0) <= 100
    # A shorter Retry-After than the backoff does not shorten the backoff.
    plain = policy.delay_ms(5, rng=random.Random(3))
    assert policy.delay_ms(5, rng=random.Random(3), retry_after=0.001) == plain


def test_policy_follows_settings_and_refuses_nonsense():
    settings = Settings(retry_backoff_ms=250, retry_backoff_max_ms=4000)
    policy = RetryPolicy.from_settings(settings)
    assert (policy.base_ms, policy.max_ms, policy.jitter) == (250, 4000, "full")
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_ms=-1)
    with pytest.raises(ValueError, match="from 1"):
        policy.ceiling_ms(0)
