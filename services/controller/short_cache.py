"""Aggregates over big tables, remembered for a moment.

A dashboard polls a 50,000-job bulk enrollment's progress, and the trustpoint list with its
total, several times a second while workers keep both cores busy. Each answer counts tens
of thousands of rows; counted again on every poll, the work grows with the fleet *and* with
the length of the run. Remembered for a second, it is done about once a second however many
pollers there are (pollers that find it stale at the same moment each count once). Callers
key entries by the database's URL, so apps on different databases (tests) never share one.
Small results (a test's five jobs, a branch office's list) are never remembered: for them
counting is cheap and exactness is expected.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class ShortCache:
    def __init__(self, seconds: float, *, max_entries: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.max_entries, self.clock = seconds, max_entries, clock
        self._entries: dict[Hashable, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T], *, keep: Callable[[T], bool]) -> T:
        """The value remembered for ``key`` if still fresh, else ``compute()``, remembered when
        ``keep(value)`` says it is worth it."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and now - entry[0] < self.seconds:
            return entry[1]  # type: ignore[return-value]
        value = compute()
        with self._lock:
            if keep(value):
                if len(self._entries) >= self.max_entries:
                    self._entries = {k: v for k, v in self._entries.items() if now - v[0] < self.seconds}
                    if len(self._entries) >= self.max_entries:
                        self._entries.clear()
                self._entries[key] = (now, value)
            else:
                self._entries.pop(key, None)
        return value
