"""Being fair to CAs: an EST or SCEP enrollment goes through its CA endpoint's gate
(:mod:`.ca_gate`), and a job that must wait for its CA waits without failing.

:func:`through_ca_gate` wraps the device's enrollment:

1. it asks the gate for a permit, waiting in the worker thread for up to ``PATIENCE_S`` when
   the CA is at its rate or concurrency limit (cheaper than re-queueing for a short wait);
2. longer waits raise :class:`CaWait`: the runner puts the job back with a jittered,
   exponential delay (capped by ``CERTFLEET_CA_BACKOFF_MAX_MS``) *without spending an attempt*;
3. after the exchange it records how the CA did. A failure the device reports as the CA
   being unavailable (a retryable ``ca_*`` code: refused, timeout, 5xx…) counts towards the
   circuit; once the circuit is open (several failures in a row, others not succeeding),
   that job and every other one for the CA wait too, attempts untouched, and only one
   enrollment at a time probes whether the CA is back. A CA failure while the circuit stays
   closed is the device's own trouble: an ordinary transient failure, spending an attempt.

Jobs give up on a CA that stays down longer than ``CERTFLEET_CA_OUTAGE_GIVE_UP_SECONDS``
(an hour by default): they fail with code ``ca_unavailable`` and a message saying since when.

Counted per endpoint: the waits (``certfleet_ca_gate_waits_total{endpoint,reason}``) and how each
enrollment that got a permit ended for the CA (``certfleet_ca_exchanges_total{endpoint,outcome}``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from services.worker.ca_gate import CaGate, CaLimits, Decision, Outcome, ca_endpoint
from services.worker.retry_policy import RetryPolicy
from shared.clock import utcnow
from shared.enums import EnrollmentType
from shared.errors import CertfleetError, PermanentError, TransientError
from shared.logging import get_logger
from shared.metrics import CA_EXCHANGES, CA_GATE_WAITS
from shared.models import EnrollmentObject
from shared.settings import Settings

#: Enrollment types whose device talks to a CA during enrollment.
CA_TYPES = frozenset({EnrollmentType.EST, EnrollmentType.SCEP})
#: Longest a worker thread waits for a permit before putting the job back.
PATIENCE_S = 1.0
#: Polling step while waiting for a concurrency slot (no hint says when one frees up).
POLL_S = 0.05
#: The gate's outcome of an exchange, as the exchanges counter names it.
EXCHANGE_OUTCOMES = {"ok": "succeeded", "down": "ca_unavailable", "unknown": "failed"}


#: The endpoints whose exchange outcomes this process exports (each outcome from 0).
_EXPORTED: set[str] = set()


def _export_at_zero(endpoint: str) -> None:
    """Every outcome of an endpoint's exchanges exported at 0 from the process's first enrollment
    with it: a counter that first appears at 3 reads as no increase to rate(), so a CA that was down
    from the start would never show in its unavailable share."""
    if endpoint not in _EXPORTED:
        for outcome in EXCHANGE_OUTCOMES.values():
            CA_EXCHANGES.labels(endpoint=endpoint, outcome=outcome)
        _EXPORTED.add(endpoint)


class CaWait(CertfleetError):
    """The job must wait for its CA; not a failure. ``retry_in`` is the least wait, in seconds."""

    code = "ca_wait"

    def __init__(self, message: str, *, code: str, retry_in: float) -> None:
        super().__init__(message, code=code)
        self.retry_in = retry_in


def limits_for(obj: EnrollmentObject, settings: Settings) -> CaLimits:
    return CaLimits(concurrency=obj.ca_concurrency_limit or settings.ca_concurrency,
                    rate_per_second=obj.ca_rate_limit or settings.ca_rate_per_second)


def is_ca_unavailable(error: TransientError) -> bool:
    """A retryable failure the device blames on the CA (devices report CA trouble as ``ca_*``)."""
    return error.code.startswith("ca_")


def permit_lease_ms(settings: Settings) -> float:
    """How long a permit is held at most: the exchange's device requests, each within the device
    timeout, and a margin. A permit of a killed worker frees itself after this."""
    return (3 * settings.device_timeout_seconds + 5) * 1000


class PermitCarry:
    """A batch's permit from an exchange that went well, kept until the batch's next enrollment with
    the same CA gives it back in the same step as it asks for its own permit: one gate round trip per
    enrollment instead of two. The batch gives it back before anything else (:meth:`flush`)."""

    def __init__(self, gate: CaGate, settings: Settings) -> None:
        self.gate, self.settings = gate, settings
        self.endpoint, self._token = "", ""

    def take(self, endpoint: str) -> str:
        """The token to give back with ``endpoint``'s next acquire ("" for none); any other
        endpoint's permit is given back now."""
        if self.endpoint != endpoint:
            self.flush()
            return ""
        token, self.endpoint, self._token = self._token, "", ""
        return token

    def hold(self, endpoint: str, token: str) -> None:
        self.flush()
        self.endpoint, self._token = endpoint, token

    def flush(self) -> None:
        if self._token:
            endpoint, token, self.endpoint, self._token = self.endpoint, self._token, "", ""
            try:
                self.gate.finish(endpoint, token, outcome="ok", cap_ms=self.settings.ca_backoff_max_ms, jitter=0.0)
            except Exception as exc:  # Redis gone: the permit frees itself when its lease ends
                get_logger(__name__).warning("could not give a CA permit back; it frees itself when its lease ends",
                                             endpoint=endpoint, error=type(exc).__name__)


@contextmanager
def through_ca_gate(
    gate: CaGate, obj: EnrollmentObject, settings: Settings, *, rng: random.Random,
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], datetime] = utcnow, carry: PermitCarry | None = None,
) -> Iterator[None]:
    """Run the enclosed enrollment through the CA gate of ``obj``'s endpoint (see the module).

    ``sleep`` and ``clock`` (seconds) time the wait for a permit in this thread; ``wall_clock``
    says how long the CA has been down, against the gate's epoch-millisecond times. ``carry``: a
    batch's :class:`PermitCarry`, which gives back a permit that went well with the next acquire."""
    if EnrollmentType(obj.enrollment_type) not in CA_TYPES or not obj.enrollment_url:
        if carry is not None:
            carry.flush()
        yield
        return
    endpoint = ca_endpoint(obj.enrollment_url)
    _export_at_zero(endpoint)
    limits = limits_for(obj, settings)
    releasing = carry.take(endpoint) if carry is not None else ""
    decision = _acquire(gate, endpoint, limits, settings, sleep=sleep, clock=clock, wall_clock=wall_clock,
                        releasing=releasing)

    def finish(outcome: Outcome):
        CA_EXCHANGES.labels(endpoint=endpoint, outcome=EXCHANGE_OUTCOMES[outcome]).inc()
        if outcome == "ok" and carry is not None:
            carry.hold(endpoint, decision.token)
            return None
        return gate.finish(endpoint, decision.token, outcome=outcome, cap_ms=settings.ca_backoff_max_ms,
                           jitter=rng.random())

    try:
        yield
    except TransientError as error:
        if not is_ca_unavailable(error):
            finish("unknown")  # the device's trouble, not the CA's
            raise
        circuit = finish("down")
        if not circuit.open:
            raise  # only this device's trouble so far: an ordinary retry
        _give_up_if_too_long(endpoint, circuit.down_since_ms, settings, error.message, now=wall_clock())
        retry_in = max(circuit.retry_in_ms / 1000, error.retry_after or 0.0)
        CA_GATE_WAITS.labels(endpoint=endpoint, reason="circuit").inc()
        raise CaWait(f"{error.message}; CA at {endpoint} unavailable, waiting for it",
                     code=error.code, retry_in=retry_in) from None
    except BaseException:
        finish("unknown")
        raise
    else:
        finish("ok")


def park_delay_ms(ca_waits: int, wait: CaWait, settings: Settings, *, rng: random.Random) -> int:
    """Milliseconds until a waiting job tries again: equal jitter around a ceiling that doubles
    with every wait (from CERTFLEET_RETRY_BACKOFF_MS up to CERTFLEET_CA_BACKOFF_MAX_MS), and
    never sooner than the gate said. Jobs told the same time (the circuit reopens at one
    instant) are spread over as long again, so they do not come back as one herd."""
    policy = RetryPolicy(base_ms=settings.retry_backoff_ms, max_ms=settings.ca_backoff_max_ms, jitter="equal")
    return policy.delay_ms(ca_waits + 1, rng=rng, retry_after=wait.retry_in * (1 + rng.random()))


def _acquire(gate: CaGate, endpoint: str, limits: CaLimits, settings: Settings, *, sleep, clock,
             wall_clock, releasing: str = "") -> Decision:
    deadline = clock() + PATIENCE_S
    lease_ms = permit_lease_ms(settings)
    while True:
        decision = gate.acquire(endpoint, limits, lease_ms=lease_ms, releasing=releasing)
        releasing = ""  # given back by the first ask
        if decision.granted:
            return decision
        if decision.reason == "circuit":
            _give_up_if_too_long(endpoint, decision.down_since_ms, settings, "", now=wall_clock())
            since = _when(decision.down_since_ms)
            CA_GATE_WAITS.labels(endpoint=endpoint, reason="circuit").inc()
            raise CaWait(f"CA at {endpoint} unavailable since {since}, waiting for it",
                         code="ca_unavailable", retry_in=decision.retry_in_ms / 1000)
        wait = decision.retry_in_ms / 1000 if decision.reason == "rate" else POLL_S
        if clock() + wait > deadline:
            what = (f"rate limit {limits.rate_per_second:g}/s" if decision.reason == "rate"
                    else f"concurrency limit {limits.concurrency}")
            CA_GATE_WAITS.labels(endpoint=endpoint, reason=decision.reason).inc()
            raise CaWait(f"CA at {endpoint} at its {what}, waiting for a turn", code="ca_busy",
                         retry_in=max(wait, POLL_S))
        sleep(wait)


def _give_up_if_too_long(endpoint: str, down_since_ms: float, settings: Settings, last_error: str, *,
                         now: datetime) -> None:
    if not down_since_ms:
        return
    down_for = now.timestamp() - down_since_ms / 1000
    if down_for > settings.ca_outage_give_up_seconds:
        reason = f" (last: {last_error})" if last_error else ""
        raise PermanentError(
            f"CA at {endpoint} unavailable since {_when(down_since_ms)}, {down_for / 60:.0f} min{reason}; "
            f"gave up waiting after {settings.ca_outage_give_up_seconds / 60:g} min "
            "(CERTFLEET_CA_OUTAGE_GIVE_UP_SECONDS): start the enrollment again once the CA is back",
            code="ca_unavailable",
        )


def _when(epoch_ms: float) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
