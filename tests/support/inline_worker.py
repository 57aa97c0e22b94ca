"""The worker's side of an API test, run in the test's own thread: the real runner (claim, device
calls over HTTP to the simulator, fenced outcome) takes every unfinished job until none is left, on
the test's clock. A retry the runner schedules is simply run again at once: its delay is the
broker's business, not the job's."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

import dramatiq
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from services.worker.ca_gate import MemoryCaGate
from services.worker.context import WorkerContext
from services.worker.retry_policy import RetryPolicy
from services.worker.runner import JobOutcome, run_job
from shared.device_client import HttpDeviceClient
from shared.models import Job
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.support.api import SECRET_KEY


def worker_context(engine: Engine, clock: Callable[[], datetime]) -> WorkerContext:
    """A worker's context on the API's database and secret key (close it after the test)."""
    settings = Settings(database_url=str(engine.url), secret_key=SECRET_KEY, retry_backoff_ms=10,
                        retry_backoff_max_ms=20, device_timeout_seconds=5.0)
    return WorkerContext(settings=settings, engine=engine, devices=HttpDeviceClient(timeout_seconds=5.0),
                         retry=RetryPolicy.from_settings(settings), secrets=SecretBox(SECRET_KEY), clock=clock,
                         rng=random.Random(3), ca_gate=MemoryCaGate(clock_ms=lambda: clock().timestamp() * 1000))


def run_unfinished(ctx: WorkerContext, broker: dramatiq.Broker, *, rounds: int = 20) -> list[JobOutcome]:
    """Run every queued or running job, again and again, until each has succeeded or failed."""
    outcomes: list[JobOutcome] = []
    for _ in range(rounds):
        with Session(ctx.engine) as session:
            job_ids = session.exec(select(Job.id).where(Job.state.in_(("queued", "running")))
                                   .order_by(Job.created_at, Job.id)).all()
        if not job_ids:
            return outcomes
        outcomes += [run_job(ctx, job_id, broker=broker) for job_id in job_ids]
    raise AssertionError(f"jobs still unfinished after {rounds} rounds: {outcomes[-5:]}")
