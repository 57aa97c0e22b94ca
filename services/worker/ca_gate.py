"""The CA gate: how many enrollments may talk to one CA endpoint, how often, and whether the
CA is down. Shared by every worker thread and process, keyed by the CA's endpoint.

Three rules, checked together in one step (:meth:`CaGate.acquire`):

- **circuit**: after ``threshold`` CA-unavailable failures in a row the endpoint is *open*
  (down) for a backoff that doubles with every failed probe, capped; once it ends, one
  enrollment probes the CA while the others keep waiting. A success closes the circuit.
- **rate**: a generic cell-rate limiter. Enrollments start at most ``rate_per_second`` per
  second, evenly spaced, with a burst of a tenth of a second's worth; the answer says when
  the next one may start.
- **concurrency**: at most ``concurrency`` permits at once. A permit is a lease, so one held
  by a worker killed with ``kill -9`` frees itself when the lease runs out.

:class:`MemoryCaGate` keeps the state in the process (the in-process broker: one process);
:class:`services.worker.ca_gate_redis.RedisCaGate` keeps it in Redis, for every worker
process, with the very same rules in Lua. Times are milliseconds.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import urlsplit

from shared.errors import ValidationError

#: CA-unavailable failures in a row that open the circuit. A few: one device that cannot
#: route to the CA must not stop the others (their successes close it again).
CIRCUIT_THRESHOLD = 5
#: First time the circuit stays open; doubled for every failed probe, up to the cap.
CIRCUIT_BASE_MS = 1000
#: How long the gate remembers an endpoint it has not heard of (a day).
STATE_TTL_MS = 86_400_000
DEFAULT_PORTS = {"https": 443, "http": 80}


def ca_endpoint(url: str) -> str:
    """``scheme://host:port`` of a CA URL: what limits and outages are counted by.

    >>> ca_endpoint("https://CA.example.com/.well-known/est/")
    'https://ca.example.com:443'
    >>> ca_endpoint("https://[2001:db8::5]:8443/")
    'https://[2001:db8::5]:8443'
    """
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
        parts = parts._replace(netloc="")
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in DEFAULT_PORTS or not host:
        raise ValidationError(f"{url!r} is not an http(s) URL of a CA", code="invalid_enrollment_url")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}"


@dataclass(frozen=True, kw_only=True)
class CaLimits:
    concurrency: int
    rate_per_second: float

    def __post_init__(self) -> None:
        if self.concurrency < 1 or not self.rate_per_second > 0:
            raise ValueError(f"CA limits must be positive: {self}")

    @property
    def interval_ms(self) -> float:
        """Milliseconds between two enrollment starts at the steady rate."""
        return 1000.0 / self.rate_per_second

    @property
    def tolerance_ms(self) -> float:
        """How far ahead of the steady rate a burst may run: a tenth of a second's worth of starts
        (at least one), so no second ever sees more than about 1.1 times the rate."""
        return (max(1.0, self.rate_per_second / 10) - 1) * self.interval_ms


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What the gate answered. ``granted``: go, holding ``token``; otherwise wait ``retry_in_ms``."""

    granted: bool
    #: "rate", "concurrency" or "circuit" when not granted.
    reason: str = ""
    retry_in_ms: float = 0.0
    token: str = ""
    #: When the CA started failing (epoch ms), for "circuit" answers.
    down_since_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Circuit:
    """The endpoint's health after an outcome was recorded."""

    open: bool
    retry_in_ms: float = 0.0
    down_since_ms: float = 0.0


#: How an enrollment went for its CA: it answered ("ok" closes the circuit), it was unavailable
#: ("down" counts towards opening it), or nothing is known (the device failed first).
Outcome = Literal["ok", "down", "unknown"]


class CaGate(Protocol):
    def acquire(self, endpoint: str, limits: CaLimits, *, lease_ms: float, releasing: str = "") -> Decision:
        """A permit, or why not now. ``releasing``: the token of a permit whose exchange went well,
        given back first in the same step (as ``finish`` with "ok" would)."""
        ...

    def finish(self, endpoint: str, token: str, *, outcome: Outcome, cap_ms: float, jitter: float) -> Circuit:
        """Give the permit back and record the outcome (``jitter`` in [0, 1] spreads the
        circuit's backoff)."""
        ...

    def open_circuits(self) -> dict[str, float]:
        """Endpoint -> when it went down (epoch ms), for each endpoint whose circuit is open:
        opened since the CA's last success, whether or not a probe may start yet."""
        ...


def circuit_backoff_ms(openings: int, *, cap_ms: float, jitter: float) -> float:
    """Open time after the ``openings``-th opening (1 for the first): equal jitter in
    [ceiling/2, ceiling] so probes never come back all at once."""
    ceiling = min(cap_ms, CIRCUIT_BASE_MS * 2 ** min(openings - 1, 30))
    return ceiling / 2 + ceiling / 2 * jitter


@dataclass
class _Endpoint:
    tat: float = 0.0  # theoretical arrival time of the next start (rate)
    holders: dict[str, float] = field(default_factory=dict)  # token -> lease end (concurrency)
    failures: int = 0  # CA-unavailable failures in a row
    openings: int = 0  # times the circuit opened since the last success
    open_until: float = 0.0
    probing_until: float = 0.0
    probe: str = ""  # the probing permit's token
    down_since: float = 0.0


class MemoryCaGate:
    """The gate for one process (the in-process broker), with the same rules as Redis's."""

    def __init__(self, clock_ms: Callable[[], float] | None = None) -> None:
        self._clock_ms = clock_ms or (lambda: time.time() * 1000)
        self._lock = threading.Lock()
        self._endpoints: dict[str, _Endpoint] = {}

    def acquire(self, endpoint: str, limits: CaLimits, *, lease_ms: float, releasing: str = "") -> Decision:
        with self._lock:
            now = self._clock_ms()
            e = self._endpoints.setdefault(endpoint, _Endpoint())
            if releasing:
                self._release_ok(e, releasing)
            probe = False
            if e.failures >= CIRCUIT_THRESHOLD:
                if now < e.open_until:
                    return Decision(granted=False, reason="circuit", retry_in_ms=e.open_until - now,
                                    down_since_ms=e.down_since)
                if now < e.probing_until:  # another enrollment is probing: ask again soon
                    return Decision(granted=False, reason="circuit", down_since_ms=e.down_since,
                                    retry_in_ms=min(e.probing_until - now, CIRCUIT_BASE_MS))
                probe = True
            tat = max(e.tat, now)
            if tat - now > limits.tolerance_ms:
                return Decision(granted=False, reason="rate", retry_in_ms=tat - now - limits.tolerance_ms)
            e.holders = {t: end for t, end in e.holders.items() if end > now}
            if len(e.holders) >= limits.concurrency:
                return Decision(granted=False, reason="concurrency")
            token = uuid.uuid4().hex
            e.holders[token] = now + lease_ms
            e.tat = tat + limits.interval_ms
            if probe:
                e.probing_until, e.probe = now + lease_ms, token
            return Decision(granted=True, token=token)

    def finish(self, endpoint: str, token: str, *, outcome: Outcome, cap_ms: float, jitter: float) -> Circuit:
        with self._lock:
            now = self._clock_ms()
            e = self._endpoints.setdefault(endpoint, _Endpoint())
            if outcome == "ok":
                self._release_ok(e, token)
                return Circuit(open=False)
            e.holders.pop(token, None)
            if token == e.probe:  # the probe ended, whatever it found: the next one may start
                e.probing_until, e.probe = 0.0, ""
            if outcome == "unknown":
                return Circuit(open=False)
            e.failures += 1
            e.down_since = e.down_since or now
            if e.failures >= CIRCUIT_THRESHOLD and now >= e.open_until:
                e.openings += 1
                e.open_until = now + circuit_backoff_ms(e.openings, cap_ms=cap_ms, jitter=jitter)
                e.probing_until = 0.0
            is_open = now < e.open_until
            return Circuit(open=is_open, retry_in_ms=max(0.0, e.open_until - now) if is_open else 0.0,
                           down_since_ms=e.down_since)

    @staticmethod
    def _release_ok(e: _Endpoint, token: str) -> None:
        """The permit back after the CA answered: the circuit closes."""
        e.holders.pop(token, None)
        if token == e.probe:
            e.probe = ""
        e.failures = e.openings = 0
        e.open_until = e.probing_until = e.down_since = 0.0

    def open_circuits(self) -> dict[str, float]:
        with self._lock:
            return {endpoint: e.down_since for endpoint, e in self._endpoints.items() if e.openings > 0}
