"""The worker processes of bench/health.py, run by the dramatiq CLI as ``certfleet worker`` runs
:mod:`services.worker.main`: the same broker, context and actors, the broker's Redis keys under
the benchmark's own namespace (``BENCH_HEALTH_NAMESPACE``) so that it can share a Redis database.

    python -m dramatiq bench.health_worker --processes 2 --threads 8 --queues certfleet-bulk
"""

from __future__ import annotations

import logging
import os

from services.worker.actors import declare_actors
from services.worker.context import WorkerContext
from shared.broker import make_broker
from shared.logging import configure_logging
from shared.settings import get_settings

settings = get_settings()
configure_logging(settings.log_level, settings.log_format)
logging.getLogger("httpx").setLevel(logging.WARNING)
broker = make_broker(settings)
broker.namespace = os.environ["BENCH_HEALTH_NAMESPACE"]  # read on every Redis call, not only at start
context = WorkerContext.create(settings)
actors = declare_actors(broker, context)
