"""The CA gate in a real Redis (db 7), where every worker process shares it: the same rules as
the gate in process, timed by a ManualClock handed to the Lua scripts; two gates on separate
connections (two worker processes) counting one CA's permits and outage together; and without
a clock, the Redis server's own time; and the circuits the controller reads from it for its metrics.
Each test keeps its keys under a prefix of its own and removes them afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from services.worker.ca_gate import CIRCUIT_THRESHOLD, CaLimits
from services.worker.ca_gate_redis import RedisCaGate
from shared.ca_circuits import RedisCircuits
from shared.metrics import CaCircuitCollector
from tests.support.ca_gate_rules import CA, RULES, open_circuit
from tests.support.clock import ManualClock

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/7"


@pytest.fixture
def prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and Redis is unreachable: {exc}")
        pytest.skip(f"Redis is unreachable: {exc}")
    name = f"certfleet-test:ca:{uuid.uuid4().hex}"
    yield name
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gates(prefix, clock) -> Iterator[list[RedisCaGate]]:
    """Two gates on their own connections, as two worker processes have."""
    made = [RedisCaGate.from_url(REDIS_URL, prefix=prefix, clock_ms=clock.ms) for _ in range(2)]
    yield made
    for gate in made:
        gate.close()


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_the_gate_in_redis_follows_the_rules(gates, clock, rule):
    rule(gates[0], clock)


def test_two_worker_processes_share_one_ca_s_limits_and_its_outage(gates, clock):
    first, second = gates
    limits = CaLimits(concurrency=4, rate_per_second=100_000)
    answers = [g.acquire(CA, limits, lease_ms=60_000) for g in (first, second) * 3]
    assert [d.granted for d in answers] == [True] * 4 + [False] * 2
    assert {d.reason for d in answers[4:]} == {"concurrency"}
    second.finish(CA, answers[0].token, outcome="ok", cap_ms=60_000, jitter=0)  # a permit the first one took
    assert first.acquire(CA, limits, lease_ms=60_000).granted

    circuit = open_circuit(second, jitter=0.5)
    assert (circuit.open, circuit.retry_in_ms, circuit.down_since_ms) == (True, 750, clock.ms())
    seen_by_first = first.acquire(CA, limits, lease_ms=60_000)
    assert (seen_by_first.reason, seen_by_first.retry_in_ms, seen_by_first.down_since_ms) == (
        "circuit", 750, clock.ms())


def test_a_redis_that_forgot_the_gate_s_scripts_still_gates(gates, clock):
    """After a Redis restart (or SCRIPT FLUSH) the scripts are gone from the server: the gate loads
    them again instead of failing the enrollment, and keeps counting as before."""
    gate = gates[0]
    limits = CaLimits(concurrency=1, rate_per_second=100_000)
    first = gate.acquire(CA, limits, lease_ms=60_000)
    gate.client.script_flush()
    assert (first.granted, gate.acquire(CA, limits, lease_ms=60_000).reason) == (True, "concurrency")
    gate.client.script_flush()
    assert not gate.finish(CA, first.token, outcome="ok", cap_ms=60_000, jitter=0).open
    assert gate.acquire(CA, limits, lease_ms=60_000).granted


def test_without_a_clock_the_redis_servers_time_counts(prefix):
    client = redis.Redis.from_url(REDIS_URL)
    gate = RedisCaGate(client, prefix=prefix)
    try:
        seconds, micros = client.time()
        before_ms = seconds * 1000 + micros // 1000
        for _ in range(CIRCUIT_THRESHOLD):
            circuit = gate.finish(CA, "", outcome="down", cap_ms=60_000, jitter=0)
        seconds, micros = client.time()
        after_ms = seconds * 1000 + micros // 1000
    finally:
        gate.close()
    assert circuit.open and circuit.retry_in_ms == 500
    assert before_ms <= circuit.down_since_ms <= after_ms


def test_the_controller_reads_each_endpoint_s_circuit_from_the_gate_for_its_metrics(gates, prefix):
    """certfleet_ca_circuit_open as the controller's /metrics renders it from the workers' gate: 1 for the
    endpoint that is down, 0 for one the gate has seen answer, until that one's circuit opens too; and a
    gate it cannot reach leaves the metric out instead of failing the scrape."""
    worker = gates[0]
    up_ca = "https://[2001:db8::7]:443"
    granted = worker.acquire(up_ca, CaLimits(concurrency=1, rate_per_second=10), lease_ms=60_000)
    worker.finish(up_ca, granted.token, outcome="ok", cap_ms=60_000, jitter=0)
    open_circuit(worker)
    circuits = RedisCircuits.from_url(REDIS_URL, prefix=prefix)
    try:
        assert circuits.circuits_open() == {CA: True, up_ca: False}
        assert set(circuits.open_circuits()) == {CA}  # what the alert pass reads agrees
        registry = CollectorRegistry()
        registry.register(CaCircuitCollector(circuits.circuits_open))
        assert registry.get_sample_value("certfleet_ca_circuit_open", {"endpoint": CA}) == 1
        assert registry.get_sample_value("certfleet_ca_circuit_open", {"endpoint": up_ca}) == 0
        for _ in range(CIRCUIT_THRESHOLD):
            worker.finish(up_ca, "", outcome="down", cap_ms=60_000, jitter=0)
        assert registry.get_sample_value("certfleet_ca_circuit_open", {"endpoint": up_ca}) == 1
    finally:
        circuits.close()

    unreachable = RedisCircuits.from_url("redis://127.0.0.1:1/0", prefix=prefix)  # nothing listens there
    try:
        registry = CollectorRegistry()
        registry.register(CaCircuitCollector(unreachable.circuits_open))
        registry.register(Gauge("certfleet_probe", "another metric of the same scrape", registry=None))
        text = generate_latest(registry).decode()
    finally:
        unreachable.close()
    assert "certfleet_ca_circuit_open" not in text and "certfleet_probe 0.0" in text
