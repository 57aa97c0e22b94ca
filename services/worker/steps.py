"""The timestamped record of what a job did, as the operator reads it on the job.

Entries are collected in memory while the job talks to the device and written with the
job's next fenced update, so recording a step costs no database round trip of its own.
Details name devices, trustpoints and certificates; never secrets.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

Step = dict[str, Any]


class StepLog:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self.entries: list[Step] = []

    def add(self, step: str, detail: str = "") -> None:
        self.entries.append({"at": self._clock().isoformat(), "step": step, "detail": detail})

    def drain(self) -> list[Step]:
        """The entries not yet written, leaving the log empty."""
        entries, self.entries = self.entries, []
        return entries
