"""Webhook requests on a thread pool, so the relay's loop never waits for a receiver.

A webhook has at most a few *lanes* (requests in flight) at a time; a lane sends a run of the
webhook's deliveries one after another. So a receiver that never answers ties up that many
threads for a timeout each, and neither another webhook nor the stream waits for it. A lane
stops at its first failed attempt and hands the rest back unattempted (the receiver is likely
down: each delivery then waits out its own backoff), and a webhook whose last attempt failed
gets a single lane until one succeeds again, so a receiver that is down is asked little.

The outcomes wait here until the relay writes them to the database in its next pass; until then
their deliveries are *in flight* and the relay does not send them again.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from shared import alerts
from shared.clock import utcnow

CONTENT_TYPE = "application/cloudevents+json"
#: Requests in flight per webhook, and deliveries a lane takes at most.
LANES_PER_WEBHOOK = 4
LANE_SIZE = 100
#: Threads (so lanes) across every webhook.
THREADS = 32
#: How much of a receiver's refusal the delivery log keeps (its column holds 512 characters).
ERROR_CHARS = 512


@dataclass(frozen=True)
class Target:
    """Where a webhook's deliveries go, and the secret they are signed with."""

    webhook_id: uuid.UUID
    url: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Parcel:
    """One delivery: the CloudEvent's id and its JSON bytes, the body as sent."""

    delivery_id: uuid.UUID
    event_id: str
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery's attempt; ``attempted`` False: its lane stopped before it."""

    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    at: datetime
    attempted: bool = True
    ok: bool = False
    #: The receiver's HTTP status; None when it gave none (timeout, refused connection).
    status: int | None = None
    error: str = ""


def signed_headers(secret: str, *, event_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """A delivery's headers: the CloudEvents media type, the signature over ``body`` and the event's id."""
    return {"Content-Type": CONTENT_TYPE, alerts.TIMESTAMP_HEADER: str(timestamp),
            alerts.SIGNATURE_HEADER: alerts.sign(secret, timestamp, body), alerts.EVENT_ID_HEADER: event_id}


class WebhookSender:
    def __init__(self, *, timeout_seconds: float, lanes_per_webhook: int = LANES_PER_WEBHOOK,
                 lane_size: int = LANE_SIZE, threads: int = THREADS, clock: Callable[[], datetime] = utcnow,
                 wall: Callable[[], float] = time.time) -> None:
        self.timeout_seconds, self.lanes_per_webhook, self.lane_size = timeout_seconds, lanes_per_webhook, lane_size
        self.threads, self._clock, self._wall = threads, clock, wall
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="certfleet-webhook")
        self._client = httpx.Client(timeout=timeout_seconds, follow_redirects=False,
                                    limits=httpx.Limits(max_connections=threads, max_keepalive_connections=threads))
        self._lock = threading.Lock()
        self._lanes: dict[uuid.UUID, int] = {}
        self._struggling: set[uuid.UUID] = set()
        self._in_flight: dict[uuid.UUID, set[uuid.UUID]] = {}
        self._outcomes: list[Outcome] = []
        #: Moves on when the relay forgets what is in flight (it lost its lease): a late outcome is dropped.
        self._generation = 0
        self._closed = False

    # --- what the relay asks -------------------------------------------------------------------

    def free_lanes(self, webhook_id: uuid.UUID) -> int:
        with self._lock:
            allowed = 1 if webhook_id in self._struggling else self.lanes_per_webhook
            spare_threads = self.threads - sum(self._lanes.values())
            return max(0, min(allowed - self._lanes.get(webhook_id, 0), spare_threads))

    def busy(self) -> bool:
        """Whether any delivery is in flight or finished and not yet released."""
        with self._lock:
            return any(self._in_flight.values())

    def in_flight(self, webhook_id: uuid.UUID) -> frozenset[uuid.UUID]:
        with self._lock:
            return frozenset(self._in_flight.get(webhook_id, ()))

    def send(self, target: Target, parcels: Sequence[Parcel]) -> int:
        """Start sending ``parcels`` (none of them in flight) on the webhook's free lanes; returns
        how many were taken (the rest wait for a later pass)."""
        free = self.free_lanes(target.webhook_id)
        parcels = list(parcels[:free * self.lane_size])
        if not parcels or self._closed:
            return 0
        lanes = min(free, len(parcels))
        size = math.ceil(len(parcels) / lanes)
        with self._lock:
            self._in_flight.setdefault(target.webhook_id, set()).update(p.delivery_id for p in parcels)
            generation = self._generation
            for start in range(0, len(parcels), size):
                self._lanes[target.webhook_id] = self._lanes.get(target.webhook_id, 0) + 1
                self._pool.submit(self._lane, target, parcels[start:start + size], generation)
        return len(parcels)

    def finished(self) -> list[Outcome]:
        """The outcomes reported since the last call. Their deliveries stay in flight until
        :meth:`release`, once the outcomes are written (or given up)."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
            return outcomes

    def release(self, outcomes: Sequence[Outcome]) -> None:
        with self._lock:
            for outcome in outcomes:
                self._in_flight.get(outcome.webhook_id, set()).discard(outcome.delivery_id)

    def forget(self) -> None:
        """Drop what is in flight and every outcome not yet written: another relay leads now and
        sends those deliveries itself. Lanes still running keep their threads until they end."""
        with self._lock:
            self._generation += 1
            self._in_flight.clear()
            self._outcomes.clear()

    def close(self) -> None:
        """Stop: no new lane starts, a running lane stops after its current request."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # --- the lanes -----------------------------------------------------------------------------

    def _lane(self, target: Target, parcels: list[Parcel], generation: int) -> None:
        try:
            for index, parcel in enumerate(parcels):
                outcome = self._post(target, parcel) if not self._closed else None
                if outcome is not None:
                    self._report(generation, outcome)
                if outcome is None or not outcome.ok:
                    at = self._clock()
                    untried = parcels[index + (outcome is not None):]
                    self._report(generation, *(Outcome(p.delivery_id, target.webhook_id, at, attempted=False)
                                               for p in untried))
                    return
        finally:
            with self._lock:
                self._lanes[target.webhook_id] -= 1
                if not self._lanes[target.webhook_id]:
                    del self._lanes[target.webhook_id]

    def _report(self, generation: int, *outcomes: Outcome) -> None:
        with self._lock:
            if generation != self._generation:
                return
            self._outcomes.extend(outcomes)
            for outcome in outcomes:
                if outcome.attempted:
                    (self._struggling.discard if outcome.ok else self._struggling.add)(outcome.webhook_id)

    def _post(self, target: Target, parcel: Parcel) -> Outcome:
        def failed(error: str, status: int | None = None) -> Outcome:
            return Outcome(parcel.delivery_id, target.webhook_id, self._clock(), status=status,
                           error=error[:ERROR_CHARS])

        headers = signed_headers(target.secret, event_id=parcel.event_id, body=parcel.body,
                                 timestamp=int(self._wall()))
        try:
            response = self._client.post(target.url, content=parcel.body, headers=headers)
        except httpx.TimeoutException as exc:
            return failed(f"no answer within {self.timeout_seconds:g} s ({type(exc).__name__})")
        except Exception as exc:  # refused, reset, a bad host; or the client closed at a stop
            return failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if 200 <= response.status_code < 300:
            return Outcome(parcel.delivery_id, target.webhook_id, self._clock(), ok=True, status=response.status_code)
        said = " ".join(response.text.split())[:200]
        return failed(f"HTTP {response.status_code} {response.reason_phrase}" + (f": {said}" if said else ""),
                      response.status_code)
