"""The alert stream: one Redis stream entry per alert event, ``{"event": <the CloudEvent JSON>}``,
in the order the relay takes the events from the outbox. Capped at about ``alert_stream_maxlen``
entries (Redis trims whole nodes, ``MAXLEN ~``, which costs next to nothing); the database keeps
the events for ``alert_event_retention_days`` besides.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from shared.settings import Settings

#: The entry's one field.
FIELD = "event"
#: Seconds to wait for Redis: a relay whose Redis hangs fails its pass instead of hanging with it.
REDIS_TIMEOUT_SECONDS = 5.0


class AlertStream:
    def __init__(self, client: redis.Redis, *, key: str, maxlen: int) -> None:
        self.client, self.key, self.maxlen = client, key, maxlen

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertStream | None:
        """The stream in the broker's Redis; None without one (the embedded stack's in-process broker)."""
        if not settings.broker_url:
            return None
        client = redis.Redis.from_url(settings.broker_url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                      socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
        return cls(client, key=settings.alert_stream_key, maxlen=settings.alert_stream_maxlen)

    def append(self, events: Sequence[str]) -> None:
        """Add the events (CloudEvent JSON), in order, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            pipe.xadd(self.key, {FIELD: event}, maxlen=self.maxlen, approximate=True)
        pipe.execute()

    def close(self) -> None:
        self.client.close()
