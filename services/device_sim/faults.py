"""The fault plan: what happens to each device request before the device handles it.

Pure and seeded. A request's fate is a function of (seed, device serial, the device's
request counter), so a run repeats exactly with the same seed and the same per-device
request order. Unreachable devices are a fixed subset of the fleet, chosen by seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from services.device_sim.config import SimConfig
from services.device_sim.seeding import fraction


class Outcome(StrEnum):
    OK = "ok"
    ERROR = "error"  # 500 device_error
    TIMEOUT = "timeout"  # held for hang_seconds, then 504
    UNREACHABLE = "unreachable"  # 503 device_unreachable


class Fate(NamedTuple):
    latency_seconds: float
    outcome: Outcome


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    seed: int = 1
    latency_min_ms: float = 0.0
    latency_max_ms: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    unreachable_rate: float = 0.0
    hang_seconds: float = 30.0

    @classmethod
    def from_config(cls, config: SimConfig) -> FaultPlan:
        low, high = config.latency_range_ms
        return cls(
            seed=config.seed, latency_min_ms=low, latency_max_ms=high, error_rate=config.error_rate,
            timeout_rate=config.timeout_rate, unreachable_rate=config.unreachable_rate,
            hang_seconds=config.hang_seconds,
        )

    def is_unreachable(self, serial: str) -> bool:
        rate = self.unreachable_rate
        return rate > 0 and fraction(self.seed, "unreachable", serial) < rate

    def decide(self, serial: str, request_number: int) -> Fate:
        """The fate of the device's ``request_number``-th request."""
        latency = self._latency_seconds(serial, request_number)
        if self.is_unreachable(serial):
            return Fate(latency, Outcome.UNREACHABLE)
        if self.timeout_rate or self.error_rate:
            # One draw split into [timeout | error | ok] keeps the two rates exact and disjoint.
            draw = fraction(self.seed, "fault", serial, request_number)
            if draw < self.timeout_rate:
                return Fate(latency, Outcome.TIMEOUT)
            if draw < self.timeout_rate + self.error_rate:
                return Fate(latency, Outcome.ERROR)
        return Fate(latency, Outcome.OK)

    def _latency_seconds(self, serial: str, request_number: int) -> float:
        low, high = self.latency_min_ms, self.latency_max_ms
        if high <= low:
            return low / 1000.0
        return (low + (high - low) * fraction(self.seed, "latency", serial, request_number)) / 1000.0
