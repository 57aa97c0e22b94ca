"""Which CA endpoints the CA gate counts as down (their circuit open), read from the gate's keys in
Redis: for the controller's alerts and metrics, which may not import the workers' gate itself.

The gate (``services.worker.ca_gate_redis``) keeps one hash per endpoint at
``<prefix>:<scheme://host:port>:state``. A circuit opened since the CA's last success has
``openings`` of at least 1 (a success deletes it), and ``down_since``: when the CA started failing
(epoch milliseconds). Reading them is one SCAN of the prefix and one pipelined HMGET: cheap, a
handful of endpoints at most.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

#: Where the CA gate keeps its keys unless told otherwise.
GATE_PREFIX = "certfleet:ca"
_STATE = ":state"


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def circuit_states(client: redis.Redis, *, prefix: str = GATE_PREFIX) -> dict[str, float | None]:
    """Every endpoint the gate knows (used within a day) -> when it went down (epoch ms) while its
    circuit is open (or half-open: waiting for a probe to succeed), None while it is closed."""
    keys = sorted({key.decode() if isinstance(key, bytes) else key
                   for key in client.scan_iter(match=f"{_glob_escape(prefix)}:*{_STATE}", count=1000)})
    if not keys:
        return {}
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "openings", "down_since")
    found: dict[str, float | None] = {}
    for key, (openings, down_since) in zip(keys, pipe.execute(), strict=True):
        is_open = openings is not None and float(openings) >= 1
        found[key[len(prefix) + 1:-len(_STATE)]] = float(down_since or 0) if is_open else None
    return found


def open_circuits(client: redis.Redis, *, prefix: str = GATE_PREFIX) -> dict[str, float]:
    """Endpoint -> when it went down (epoch ms), for every endpoint whose circuit is open (or
    half-open: waiting for a probe to succeed)."""
    return {endpoint: down_since for endpoint, down_since in circuit_states(client, prefix=prefix).items()
            if down_since is not None}


class RedisCircuits:
    """The open circuits of the CA gate in Redis, as :func:`open_circuits` reads them."""

    def __init__(self, client: redis.Redis, *, prefix: str = GATE_PREFIX) -> None:
        self.client, self.prefix = client, prefix

    @classmethod
    def from_url(cls, url: str, *, prefix: str = GATE_PREFIX) -> RedisCircuits:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), prefix=prefix)

    def open_circuits(self) -> dict[str, float]:
        return open_circuits(self.client, prefix=self.prefix)

    def circuits_open(self) -> dict[str, bool]:
        """Every endpoint the gate knows -> whether its circuit is open (for the metrics)."""
        return {endpoint: down_since is not None
                for endpoint, down_since in circuit_states(self.client, prefix=self.prefix).items()}

    def close(self) -> None:
        self.client.close()
