"""A clock that moves only when the test moves it, for code that takes its time as a parameter:
as an aware UTC datetime (``clock()``, like :func:`shared.clock.utcnow`), epoch milliseconds
(``clock.ms``), monotonic seconds (``clock.monotonic``), and a ``sleep`` that passes the time
at once and remembers how long each was."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

#: Where a ManualClock starts unless told: far from today, so nothing depends on the real time.
START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class ManualClock:
    def __init__(self, start: datetime = START) -> None:
        self._now = start
        self._lock = threading.Lock()
        #: Every sleep asked for, in seconds.
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def ms(self) -> float:
        """Epoch milliseconds, as the CA gate counts time (exact to the microsecond)."""
        return ((self() - _EPOCH) // _MICROSECOND) / 1000

    def monotonic(self) -> float:
        return ((self() - _EPOCH) // _MICROSECOND) / 1_000_000

    def advance(self, seconds: float = 0.0, *, ms: float = 0.0) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds, milliseconds=ms)
            return self._now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
