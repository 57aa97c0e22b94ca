"""The CA gate in Redis, shared by every worker process: the rules of
:class:`services.worker.ca_gate.MemoryCaGate`, each step one Lua script so it is atomic,
timed by the Redis server's clock so workers on hosts with skewed clocks agree (a ``clock_ms``
given to :class:`RedisCaGate` times it instead, for tests that move time themselves).

Keys per endpoint (``<prefix>:<scheme://host:port>``):

- ``…:state``   hash: ``tat`` (rate), ``failures``, ``openings``, ``open_until``,
  ``probing_until``, ``probe`` (the probing permit), ``down_since`` (circuit); expires a day after its last change;
- ``…:holders`` sorted set: permit token -> lease end (concurrency).

A Redis flush forgets them all: permits and outages are then counted afresh, nothing else.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import redis
from redis.exceptions import NoScriptError

from services.worker.ca_gate import (
    CIRCUIT_BASE_MS,
    CIRCUIT_THRESHOLD,
    STATE_TTL_MS,
    CaLimits,
    Circuit,
    Decision,
    Outcome,
)
from shared.ca_circuits import GATE_PREFIX, open_circuits

PREFIX = GATE_PREFIX


def _now(arg: int) -> str:
    """Lua setting ``now`` (epoch ms) from ARGV[arg], or from the server's clock when that is empty."""
    return f"""
local now = tonumber(ARGV[{arg}])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""


#: Giving back ARGV[n], the permit of an exchange that went well: the circuit closes.
def _release_ok(arg: int) -> str:
    return f"""
redis.call('ZREM', KEYS[2], ARGV[{arg}])
if redis.call('HGET', KEYS[1], 'probe') == ARGV[{arg}] then redis.call('HDEL', KEYS[1], 'probe') end
redis.call('HDEL', KEYS[1], 'failures', 'openings', 'open_until', 'probing_until', 'down_since')
"""


#: The circuit's fixed rules, written into the scripts rather than sent with every call (each
#: argument costs the caller's client time to encode, once per enrollment).
_RULES = f"""
local threshold, base, ttl = {CIRCUIT_THRESHOLD}, {CIRCUIT_BASE_MS}, {STATE_TTL_MS}
"""

# KEYS: state, holders. ARGV: concurrency, interval_ms, tolerance_ms, lease_ms, token, now_ms ("": the
# server's clock), releasing ("" none: the token of a permit whose exchange went well, given back
# first). Returns {code, retry_in_ms, down_since}: 0 granted, 1 rate, 2 circuit, 3 concurrency.
_ACQUIRE = _RULES + _now(6) + "if ARGV[7] ~= '' then" + _release_ok(7) + "end" + """
local limit, interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, token = tonumber(ARGV[4]), ARGV[5]
local s = redis.call('HMGET', KEYS[1], 'failures', 'open_until', 'probing_until', 'down_since', 'tat')
local failures = tonumber(s[1]) or 0
local open_until, probing_until = tonumber(s[2]) or 0, tonumber(s[3]) or 0
local down_since, tat = tonumber(s[4]) or 0, tonumber(s[5]) or 0
local probe = false
if failures >= threshold then
  if now < open_until then return {2, tostring(open_until - now), tostring(down_since)} end
  if now < probing_until then
    return {2, tostring(math.min(probing_until - now, base)), tostring(down_since)}
  end
  probe = true
end
if tat < now then tat = now end
if tat - now > tolerance then return {1, tostring(tat - now - tolerance), '0'} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= limit then return {3, '0', '0'} end
redis.call('ZADD', KEYS[2], now + lease, token)
redis.call('PEXPIRE', KEYS[2], math.ceil(lease))
redis.call('HSET', KEYS[1], 'tat', tostring(tat + interval))
if probe then redis.call('HSET', KEYS[1], 'probing_until', now + lease, 'probe', token) end
redis.call('PEXPIRE', KEYS[1], ttl)
return {0, '0', '0'}
"""

# KEYS: state, holders. ARGV: token, outcome (ok/down/unknown), cap_ms, jitter, now_ms ("": the
# server's clock). Returns {open (1/0), retry_in_ms, down_since}.
_FINISH = _RULES + _now(5) + "if ARGV[2] == 'ok' then" + _release_ok(1) + "return {0, '0', '0'} end" + """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then redis.call('HDEL', KEYS[1], 'probing_until', 'probe') end
if ARGV[2] == 'unknown' then return {0, '0', '0'} end
local cap, jitter = tonumber(ARGV[3]), tonumber(ARGV[4])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local s = redis.call('HMGET', KEYS[1], 'openings', 'open_until', 'down_since')
local openings, open_until, down_since = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0
if down_since == 0 then
  down_since = now
  redis.call('HSET', KEYS[1], 'down_since', now)
end
if failures >= threshold and now >= open_until then
  openings = openings + 1
  local ceiling = math.min(cap, base * 2 ^ math.min(openings - 1, 30))
  open_until = now + ceiling / 2 + ceiling / 2 * jitter
  redis.call('HSET', KEYS[1], 'openings', openings, 'open_until', tostring(open_until), 'probing_until', 0)
end
redis.call('PEXPIRE', KEYS[1], ttl)
if now < open_until then return {1, tostring(open_until - now), tostring(down_since)} end
return {0, '0', tostring(down_since)}
"""

_REASONS = {1: "rate", 2: "circuit", 3: "concurrency"}
#: Key names kept per endpoint (a worker talks to a handful of CAs; the bound is for the odd one that does not).
_KEYS_KEPT = 1024


class _Script:
    """A Lua script called by its SHA1, loaded again when the server does not know it (a restart or
    a SCRIPT FLUSH). Called straight through ``EVALSHA``: redis-py's Script wrapper re-checks its
    client on every call, which costs the gate's callers more than the script itself."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client, self.source = client, source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, keys: list[str], *args: object):
        try:
            return self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.client.script_load(self.source)
            return self.client.evalsha(self.sha, len(keys), *keys, *args)


class RedisCaGate:
    def __init__(self, client: redis.Redis, *, prefix: str = PREFIX,
                 clock_ms: Callable[[], float] | None = None) -> None:
        self.client, self.prefix, self._clock_ms = client, prefix, clock_ms
        self._acquire = _Script(client, _ACQUIRE)
        self._finish = _Script(client, _FINISH)
        self._endpoint_keys: dict[str, list[str]] = {}

    @classmethod
    def from_url(cls, url: str, *, prefix: str = PREFIX, clock_ms: Callable[[], float] | None = None
                 ) -> RedisCaGate:
        return cls(redis.Redis.from_url(url), prefix=prefix, clock_ms=clock_ms)

    def close(self) -> None:
        self.client.close()

    def _now(self) -> str:
        return repr(self._clock_ms()) if self._clock_ms is not None else ""

    def _keys(self, endpoint: str) -> list[str]:
        keys = self._endpoint_keys.get(endpoint)
        if keys is None:
            if len(self._endpoint_keys) >= _KEYS_KEPT:
                self._endpoint_keys.clear()
            keys = self._endpoint_keys[endpoint] = [f"{self.prefix}:{endpoint}:state",
                                                    f"{self.prefix}:{endpoint}:holders"]
        return keys

    def acquire(self, endpoint: str, limits: CaLimits, *, lease_ms: float, releasing: str = "") -> Decision:
        token = os.urandom(16).hex()
        code, retry_in, down_since = self._acquire(
            self._keys(endpoint), limits.concurrency, repr(limits.interval_ms), repr(limits.tolerance_ms),
            repr(lease_ms), token, self._now(), releasing)
        if int(code) == 0:
            return Decision(granted=True, token=token)
        return Decision(granted=False, reason=_REASONS[int(code)], retry_in_ms=float(retry_in),
                        down_since_ms=float(down_since))

    def finish(self, endpoint: str, token: str, *, outcome: Outcome, cap_ms: float, jitter: float) -> Circuit:
        is_open, retry_in, down_since = self._finish(
            self._keys(endpoint), token, outcome, repr(cap_ms), repr(jitter), self._now())
        return Circuit(open=bool(int(is_open)), retry_in_ms=float(retry_in), down_since_ms=float(down_since))

    def open_circuits(self) -> dict[str, float]:
        return open_circuits(self.client, prefix=self.prefix)
