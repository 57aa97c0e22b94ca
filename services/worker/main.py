"""The module the dramatiq CLI loads in every worker process (``certfleet worker`` runs it).

    python -m dramatiq services.worker.main --queues certfleet-jobs certfleet-bulk

Importing it configures logging, makes the Redis broker with the Prometheus middleware,
builds the worker context (database engine, device client) and declares the actors.
"""

from __future__ import annotations

import logging
import os

import dramatiq

from services.worker.context import WorkerContext
from shared.errors import ConfigurationError
from shared.heap import settle_heap
from shared.logging import configure_logging
from shared.settings import get_settings, require_own_secret_key


def build() -> tuple[dramatiq.Broker, WorkerContext, dict[str, dramatiq.Actor]]:
    from services.worker.actors import declare_actors
    from services.worker.cli import INSECURE_DEV_KEY_ENV
    from shared.broker import make_broker

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    require_own_secret_key(settings, service="worker", insecure_dev_key=os.environ.get(INSECURE_DEV_KEY_ENV) == "1")
    # The dramatiq CLI logs at INFO; httpx (CRL and OCSP fetches) logs every request there, and a
    # line per request would cost more than the request. (The device client logs nothing per request.)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not settings.broker_url:
        raise ConfigurationError(
            "CERTFLEET_BROKER_URL is not set: worker processes need the Redis broker the controller "
            "publishes to, e.g. redis://127.0.0.1:6379/0"
        )
    # Dramatiq's Prometheus middleware reads where to serve and store its metrics when it is
    # imported. `certfleet worker` sets them; a bare `dramatiq` run gets ours rather than 0.0.0.0.
    os.environ.setdefault("dramatiq_prom_host", settings.worker_metrics_host)
    os.environ.setdefault("dramatiq_prom_port", str(settings.worker_metrics_port))
    from services.worker.queue_metrics import PrometheusFromZero

    broker = make_broker(settings, extra_middleware=[PrometheusFromZero()])
    context = WorkerContext.create(settings)
    return broker, context, declare_actors(broker, context)


broker, context, actors = build()
settle_heap()
