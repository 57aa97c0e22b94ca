"""The health pass: have the workers read every device's default keyring.

The pass reads device ids only, a page at a time in id order (keyset pagination: each page
starts after the last id of the one before, so a pass costs the same at any depth), and
publishes them in messages of ``CERTFLEET_HEALTH_BATCH_SIZE`` ids to the workers'
``check_device_health`` on the bulk queue (:mod:`services.worker.health`). There are no job
rows: a message lost with Redis, or dropped after waiting longer than an interval, is simply
covered by the next pass, one interval later.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq
from sqlmodel import Session, select

from shared.events import BULK_QUEUE, HEALTH_ACTOR, health_message
from shared.models import Device
from shared.settings import Settings

#: Device ids read per query (rounded down to whole batches).
PAGE = 5000


@dataclass(frozen=True)
class HealthPassResult:
    devices: int
    batches: int

    def describe(self) -> str:
        return f"health check of {self.devices} devices in {self.batches} batches"


def run_health_pass(session: Session, broker: dramatiq.Broker, *, settings: Settings,
                    page: int = PAGE) -> HealthPassResult:
    """Publish a health check of every device; nothing is written."""
    from shared.metrics import EVENTS_PUBLISHED

    size = settings.health_batch_size
    page = max(page // size, 1) * size  # whole batches per page: only the last message is short
    # A message that waited longer than an interval is overtaken by the next pass's.
    max_age_ms = settings.health_check_seconds * 1000
    if BULK_QUEUE not in broker.get_declared_queues():
        broker.declare_queue(BULK_QUEUE)
    devices = batches = 0
    last = None
    while True:
        query = select(Device.id).order_by(Device.id).limit(page)
        if last is not None:
            query = query.where(Device.id > last)
        ids = list(session.exec(query).all())
        for start in range(0, len(ids), size):
            broker.enqueue(health_message(ids[start:start + size], max_age_ms=max_age_ms))
            batches += 1
        devices += len(ids)
        if len(ids) < page:
            break
        last = ids[-1]
    session.rollback()  # read only: end the transaction
    if batches:
        EVENTS_PUBLISHED.labels(actor=HEALTH_ACTOR).inc(batches)
    return HealthPassResult(devices=devices, batches=batches)
