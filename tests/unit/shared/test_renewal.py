"""Renewal times: the window, the jitter that spreads a fleet, the backoff after failures, and
the settings an enrollment object may have."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import ValidationError
from shared.renewal import RenewalPolicy, check_policy, jitter_share, renewal_due_at, retry_at

ISSUED = datetime(2030, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)


def due(policy: RenewalPolicy, *, key: str = "tp-1:01", spread: float = 0.0, lifetime: timedelta = YEAR):
    return renewal_due_at(not_before=ISSUED, not_after=ISSUED + lifetime, policy=policy, key=key, spread=spread)


def test_by_default_a_certificate_is_due_when_a_third_of_its_life_remains():
    assert due(RenewalPolicy()) == ISSUED + YEAR - YEAR / 3


def test_the_window_is_a_share_or_a_number_of_days():
    assert due(RenewalPolicy(fraction=0.5)) == ISSUED + YEAR / 2
    assert due(RenewalPolicy(days=30)) == ISSUED + YEAR - timedelta(days=30)


def test_days_longer_than_the_certificate_issued_fall_back_to_the_default_share():
    # Asked for 365 days, the CA issued 10: renewing at once, forever, is what must not happen.
    ten_days = timedelta(days=10)
    assert due(RenewalPolicy(days=30), lifetime=ten_days) == ISSUED + ten_days - ten_days / 3


def test_the_jitter_spreads_a_fleet_over_the_window_and_is_the_same_every_time():
    policy, window = RenewalPolicy(), YEAR / 3
    times = [due(policy, key=f"tp-{i}:serial-{i}", spread=0.5) for i in range(2000)]
    start = ISSUED + YEAR - window
    assert all(start <= t < start + window / 2 for t in times)
    # Spread evenly: each tenth of the spread window holds roughly a tenth of the fleet.
    tenths = [sum(1 for t in times if start + window / 20 * k <= t < start + window / 20 * (k + 1))
              for k in range(10)]
    assert min(tenths) > 140 and max(tenths) < 260, tenths
    assert times == [due(policy, key=f"tp-{i}:serial-{i}", spread=0.5) for i in range(2000)]
    # A renewed certificate (a new serial) gets a new place in its window.
    assert jitter_share("tp-1:serial-1") != jitter_share("tp-1:serial-2")


def test_no_spread_renews_at_the_window_start():
    assert due(RenewalPolicy(), key="a", spread=0.0) == due(RenewalPolicy(), key="b", spread=0.0)


def test_a_failed_renewal_is_tried_again_later_and_later_until_the_certificate_ends():
    end = ISSUED + timedelta(days=3)
    now = ISSUED
    kwargs = dict(first=timedelta(minutes=15), longest=timedelta(hours=6), not_after=end)
    assert retry_at(now=now, failures=1, **kwargs) == now + timedelta(minutes=15)
    assert retry_at(now=now, failures=3, **kwargs) == now + timedelta(hours=1)
    assert retry_at(now=now, failures=10, **kwargs) == now + timedelta(hours=6)
    # Close to the end: halfway there, so the last tries still come before it.
    close = end - timedelta(minutes=10)
    assert retry_at(now=close, failures=2, **kwargs) == close + timedelta(minutes=5)
    assert retry_at(now=end - timedelta(seconds=1), failures=2, **kwargs) is None
    assert retry_at(now=end + timedelta(days=1), failures=1, **kwargs) is None


@pytest.mark.parametrize(("fraction", "days", "code"), [
    (0.5, 10, "renew_before_ambiguous"),
    (1.5, None, "renew_before_invalid"),
    (None, 365, "renew_before_too_long"),
    (None, 400, "renew_before_too_long"),
])
def test_renewal_settings_that_cannot_work_are_refused_with_a_code(fraction, days, code):
    with pytest.raises(ValidationError) as refused:
        check_policy(validity_days=365, fraction=fraction, days=days)
    assert refused.value.code == code


def test_sound_renewal_settings_pass():
    check_policy(validity_days=365, fraction=None, days=364)
    check_policy(validity_days=365, fraction=0.25, days=None)
    check_policy(validity_days=1, fraction=None, days=None)


def test_renews_only_the_methods_certfleet_can_renew():
    assert RenewalPolicy().renews("est") and RenewalPolicy().renews("self_signed")
    assert not RenewalPolicy().renews("manual") and not RenewalPolicy().renews("pkcs12")
    assert not RenewalPolicy(auto_renew=False).renews("scep")
