"""When a failed webhook delivery is tried again, and when it is given up.

Pure: the random source is passed in, so a test gets the same delays every time. The wait is
exponential (``base`` doubled per failed attempt, at most ``cap``) and drawn from the upper half of
that ceiling: a retry never comes at once, and the deliveries of a receiver that failed them all
together come back spread out rather than in one burst.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.enums import DeliveryState
from shared.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    #: Ceiling of the wait after the first failed attempt, in seconds; doubled per further attempt.
    base_seconds: float
    #: The ceiling never grows past this.
    max_seconds: float
    #: Attempts before a delivery is dead (given up and kept in the delivery log).
    max_attempts: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(base_seconds=settings.webhook_backoff_seconds, max_seconds=settings.webhook_backoff_max_seconds,
                   max_attempts=settings.webhook_max_attempts)

    def delay(self, attempt: int, *, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
        if attempt < 1:
            raise ValueError("attempts are counted from 1")
        # Cap the exponent first: 2 ** 1000 is a valid int but a silly one.
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** min(attempt - 1, 32))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def after_failure(self, attempts: int, *, now: datetime, rng: random.Random) -> tuple[DeliveryState, datetime]:
        """A delivery's state and next attempt once its attempt number ``attempts`` failed: dead
        after the last allowed attempt (its next attempt then stays ``now``: there is none)."""
        if attempts >= self.max_attempts:
            return DeliveryState.DEAD, now
        return DeliveryState.PENDING, now + timedelta(seconds=self.delay(attempts, rng=rng))
