"""Dramatiq's Prometheus middleware, with every actor's message counters at 0 from the start.

Dramatiq makes a counter's series at its first increment, so a worker's first dead letter (or
error, or retry) is a series born at 1: ``increase()`` cannot tell it from nothing, and an alert on
dead letters would miss it. Here each actor's series exist at 0 as soon as the worker process boots.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware.prometheus import Prometheus


class PrometheusFromZero(Prometheus):
    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        super().after_process_boot(broker)
        for name in broker.get_declared_actors():
            actor = broker.get_actor(name)
            for counter in (self.total_messages, self.total_errored_messages, self.total_retried_messages,
                            self.total_rejected_messages):
                counter.labels(actor.queue_name, actor.actor_name)
