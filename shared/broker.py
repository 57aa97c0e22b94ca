"""The Dramatiq broker: Redis when ``CERTFLEET_BROKER_URL`` is set, else in-process."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from shared.settings import Settings


def make_broker(settings: Settings, *, extra_middleware: list | None = None) -> dramatiq.Broker:
    # Retries stay in the chain for unexpected exceptions (a dropped database connection);
    # expected transient failures are retried by the job runner itself, tracked in the DB.
    middleware = [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(), Retries()]
    middleware += extra_middleware or []
    if settings.broker_url:
        broker: dramatiq.Broker = RedisBroker(url=settings.broker_url, middleware=middleware,
                                                 namespace=settings.broker_namespace)
    else:
        broker = StubBroker(middleware=middleware)
        broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    return broker
