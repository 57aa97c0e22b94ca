"""When to try a job again after a transient failure: jittered exponential backoff.

Pure: the random source is passed in, so a test (or a seeded worker) gets the same delays
every time. Jitter spreads the retries of a fleet that failed together (a CA or a device
manager restarting) so they do not all come back at the same instant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from shared.settings import Settings

Jitter = Literal["full", "equal"]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    #: Delay ceiling before the first retry, in milliseconds; doubled for every further attempt.
    base_ms: int = 500
    #: The ceiling never grows past this many milliseconds.
    max_ms: int = 30_000
    #: "full": anywhere in [0, ceiling]; "equal": in [ceiling / 2, ceiling] (never retries at once).
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        if self.base_ms < 0 or self.max_ms < 0:
            raise ValueError("retry delays must not be negative")
        if self.jitter not in ("full", "equal"):
            raise ValueError(f"jitter must be 'full' or 'equal', not {self.jitter!r}")

    @classmethod
    def from_settings(cls, settings: Settings, *, jitter: Jitter = "full") -> RetryPolicy:
        return cls(base_ms=settings.retry_backoff_ms, max_ms=settings.retry_backoff_max_ms, jitter=jitter)

    def ceiling_ms(self, attempt: int) -> int:
        """The largest delay after the given failed attempt (1 for the first)."""
        if attempt < 1:
            raise ValueError("attempts are counted from 1")
        # Cap the exponent first: 2 ** 1000 is a valid int but a silly one.
        return min(self.max_ms, self.base_ms * 2 ** min(attempt - 1, 32))

    def delay_ms(self, attempt: int, *, rng: random.Random, retry_after: float | None = None) -> int:
        """Milliseconds to wait after failed attempt number ``attempt``.

        ``retry_after`` (seconds, from the peer's Retry-After) is a floor: a device that says
        when it will be ready again is not asked earlier, even past ``max_ms``.
        """
        ceiling = self.ceiling_ms(attempt)
        if self.jitter == "full":
            delay = rng.uniform(0, ceiling)
        else:
            delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, retry_after * 1000)
        return round(delay)
