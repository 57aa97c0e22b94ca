"""When a certificate is due for renewal, and when a failed renewal is tried again. Pure.

A certificate's renewal window is the last part of its lifetime: a share of it (one third by
default) or a number of days. A trustpoint renews at the window's start plus a jitter: a
deterministic share of the window, different per trustpoint and certificate, so a fleet
enrolled in one batch does not renew in one minute, and a restart computes the same time again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.enums import EnrollmentType
from shared.errors import ValidationError

#: Methods certfleet renews by itself; the others (manual, PKCS12) can only be warned about.
RENEWABLE = frozenset({EnrollmentType.EST, EnrollmentType.SCEP, EnrollmentType.SELF_SIGNED})

#: The window when an enrollment object sets none: the last third of the lifetime.
DEFAULT_FRACTION = 1 / 3

#: Closer than this to a certificate's end, a failed renewal is not tried again.
LAST_TRY = timedelta(seconds=2)


@dataclass(frozen=True)
class RenewalPolicy:
    """An enrollment object's renewal settings."""

    auto_renew: bool = True
    #: Share of the lifetime, before its end, that is the renewal window.
    fraction: float | None = None
    #: Or days before the end.
    days: int | None = None

    def window(self, lifetime: timedelta) -> timedelta:
        """The renewal window of a certificate of this lifetime. A window in days that does not
        fit the certificate actually issued (a CA may issue shorter ones than asked) falls back
        to the default share, so a certificate is never due from the moment it is issued."""
        if self.days is not None:
            window = timedelta(days=self.days)
            if window < lifetime:
                return window
        return lifetime * (self.fraction if self.fraction is not None else DEFAULT_FRACTION)

    def renews(self, method: str) -> bool:
        """Whether certfleet renews trustpoints of this method itself."""
        return self.auto_renew and method in RENEWABLE


def check_policy(*, validity_days: int, fraction: float | None, days: int | None) -> None:
    """Refuse renewal settings that cannot work, with a stable code."""
    if fraction is not None and days is not None:
        raise ValidationError(
            "set renew_before_fraction or renew_before_days, not both: one window per enrollment object",
            code="renew_before_ambiguous",
        )
    if fraction is not None and not 0 < fraction < 1:
        raise ValidationError(
            f"renew_before_fraction must be between 0 and 1 (a share of the lifetime), not {fraction}",
            code="renew_before_invalid",
        )
    if days is not None and days >= validity_days:
        raise ValidationError(
            f"renew_before_days={days} is not shorter than the certificate's life ({validity_days} days): "
            "the certificate would be due for renewal as soon as it is issued; choose fewer days",
            code="renew_before_too_long",
        )


def jitter_share(key: str) -> float:
    """A number in [0, 1) fixed by ``key``: the same trustpoint and certificate get the same one."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def renewal_due_at(
    *, not_before: datetime, not_after: datetime, policy: RenewalPolicy, key: str, spread: float
) -> datetime:
    """When a certificate valid from ``not_before`` to ``not_after`` is due for renewal.

    ``spread``: the share of the window over which the fleet's renewals are spread (0 to 1).
    ``key``: what makes the jitter differ between trustpoints (their id and the serial).
    """
    lifetime = max(not_after - not_before, timedelta(0))
    window = policy.window(lifetime)
    return not_after - window + window * spread * jitter_share(key)


def retry_at(
    *, now: datetime, failures: int, not_after: datetime, first: timedelta, longest: timedelta
) -> datetime | None:
    """When to try a renewal again after ``failures`` failed in a row: ``first``, doubling per
    failure, at most ``longest``. Near the certificate's end, halfway to it instead, so the last
    tries still happen in time; None once less than :data:`LAST_TRY` remains (the expiry is
    what an operator sees then)."""
    remaining = not_after - now
    delay = min(longest, first * 2 ** max(failures - 1, 0))
    if delay < remaining:
        return now + delay
    if remaining <= LAST_TRY:
        return None
    return now + remaining / 2
