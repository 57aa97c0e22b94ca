"""Job rows and queued messages as the reconciler's tests set them up: jobs written straight
into the table at a fixed time, the messages a broker holds, and one reconciler pass."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import dramatiq
from sqlalchemy import insert
from sqlmodel import Session

from services.controller.queueing.reconciler import reconcile_once
from shared.events import JOBS_QUEUE
from shared.models import GLOBAL_DOMAIN_ID, Job

#: The lease the tests' reconciler gives a job it publishes again, in seconds.
LEASE = 60
#: The tests' "now": far from today, so nothing depends on the wall clock.
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def add_jobs(
    engine,
    count: int,
    *,
    state: str = "queued",
    lease_expires_at: datetime | None = T0,
    kind: str = "enroll",
    **fields,
) -> list[uuid.UUID]:
    """``count`` jobs of ``kind`` in ``state`` (each for its own trustpoint and device), created at T0."""
    rows = [
        {
            "id": uuid.uuid4(),
            "kind": kind,
            "trustpoint_id": uuid.uuid4(),
            "device_id": uuid.uuid4(),
            "domain_id": GLOBAL_DOMAIN_ID,
            "trustpoint_name": "vpn",
            "state": state,
            "attempts": 0,
            "max_attempts": 5,
            "lease_expires_at": lease_expires_at,
            "steps": [],
            "created_at": T0,
            **fields,
        }
        for _ in range(count)
    ]
    with Session(engine) as session:
        session.execute(insert(Job), rows)
        session.commit()
    return [row["id"] for row in rows]


def drain(broker: dramatiq.Broker, queue_name: str = JOBS_QUEUE) -> list[dramatiq.Message]:
    """Take every message off an in-process broker's queue, oldest first."""
    queue = broker.queues.get(queue_name)
    messages = []
    while queue is not None and not queue.empty():
        messages.append(dramatiq.Message.decode(queue.get_nowait()))
    return messages


def reconcile(engine, broker: dramatiq.Broker, now: datetime, **kw) -> int:
    """One reconciler pass at ``now`` with the LEASE; how many jobs it published again."""
    with Session(engine) as session:
        return reconcile_once(session, broker, now=now, lease_seconds=LEASE, **kw)
