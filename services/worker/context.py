"""What a worker process needs to run jobs, built once per process."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine

from services.worker.ca_gate import CaGate, MemoryCaGate
from services.worker.ca_gate_redis import RedisCaGate
from services.worker.retry_policy import RetryPolicy
from shared.clock import utcnow
from shared.db import make_engine
from shared.device_client import DeviceClient, HttpDeviceClient
from shared.secrets import SecretBox
from shared.settings import Settings


@dataclass(frozen=True, kw_only=True)
class WorkerContext:
    settings: Settings
    engine: Engine
    devices: DeviceClient
    retry: RetryPolicy
    #: Opens the secrets an enrollment needs (EST password, SCEP challenge).
    secrets: SecretBox
    clock: Callable[[], datetime] = utcnow
    #: Jitter for retry delays; seed it for repeatable runs. ``random.Random`` is safe to share
    #: between threads.
    rng: random.Random = field(default_factory=random.Random)
    #: Per-CA limits and outages, shared by every worker: in Redis when there is a broker URL.
    ca_gate: CaGate = field(default_factory=MemoryCaGate)

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        engine: Engine | None = None,
        devices: DeviceClient | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        max_connections: int = 64,
    ) -> WorkerContext:
        return cls(
            settings=settings,
            engine=engine if engine is not None else make_engine(settings),
            devices=devices if devices is not None else HttpDeviceClient.from_settings(
                settings, max_connections=max_connections
            ),
            retry=RetryPolicy.from_settings(settings),
            secrets=SecretBox(settings.secret_key),
            clock=clock,
            rng=rng if rng is not None else random.Random(),
            ca_gate=RedisCaGate.from_url(settings.broker_url) if settings.broker_url else MemoryCaGate(),
        )

    @property
    def holder(self) -> str:
        """Who holds a job, as its steps say: host and process (dramatiq forks after import)."""
        return f"worker {socket.gethostname()} pid {os.getpid()}"

    def close(self) -> None:
        for part in (self.devices, self.ca_gate):
            close = getattr(part, "close", None)
            if close is not None:
                close()
