"""The CA gate: concurrency, rate and outages of one CA endpoint, in process and in Redis (where
every worker process shares them), and how an enrollment waits for its CA without failing."""

from __future__ import annotations

import os
import random
import time
from types import SimpleNamespace

import pytest
import redis

from services.worker.ca_gate import CIRCUIT_THRESHOLD, CaLimits, MemoryCaGate, ca_endpoint
from services.worker.ca_gate_redis import RedisCaGate
from services.worker.ca_waiting import CaWait, limits_for, park_delay_ms, through_ca_gate
from shared.errors import PermanentError, TransientError, ValidationError
from shared.settings import Settings
from tests.support.api import GLOBAL, problem

REDIS_URL = "redis://127.0.0.1:6379/7"
CA = "https://127.0.0.1:8443"
WIDE = CaLimits(concurrency=1000, rate_per_second=100_000)


@pytest.fixture
def redis_db7():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and Redis is unreachable: {exc}")
        pytest.skip(f"Redis is unreachable: {exc}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(params=["memory", "redis"])
def gate(request):
    if request.param == "memory":
        yield MemoryCaGate()
        return
    request.getfixturevalue("redis_db7")
    gate = RedisCaGate.from_url(REDIS_URL)
    yield gate
    gate.close()


def down(gate, token: str = "", *, jitter: float = 0.0):
    return gate.finish(CA, token, outcome="down", cap_ms=60_000, jitter=jitter)


def test_endpoints_are_scheme_host_and_port():
    assert ca_endpoint("https://CA.Example.com/.well-known/est/") == "https://ca.example.com:443"
    assert ca_endpoint("http://10.0.0.5/certsrv/mscep/mscep.dll") == "http://10.0.0.5:80"
    assert ca_endpoint("https://[2001:DB8::5]:8443/") == "https://[2001:db8::5]:8443"
    with pytest.raises(ValidationError):
        ca_endpoint("ftp://ca.example.com/")


def test_concurrency_is_capped_and_a_finished_permit_frees_a_slot(gate):
    limits = CaLimits(concurrency=3, rate_per_second=100_000)
    held = [gate.acquire(CA, limits, lease_ms=60_000) for _ in range(3)]
    assert all(d.granted for d in held)
    refused = gate.acquire(CA, limits, lease_ms=60_000)
    assert (refused.granted, refused.reason) == (False, "concurrency")
    gate.finish(CA, held[0].token, outcome="ok", cap_ms=60_000, jitter=0)
    assert gate.acquire(CA, limits, lease_ms=60_000).granted
    # Another CA endpoint has its own slots.
    assert gate.acquire("https://other-ca:443", limits, lease_ms=60_000).granted


def test_a_permit_of_a_killed_worker_frees_itself_when_its_lease_ends(gate):
    limits = CaLimits(concurrency=1, rate_per_second=100_000)
    assert gate.acquire(CA, limits, lease_ms=100).granted  # never finished: its worker died
    assert not gate.acquire(CA, limits, lease_ms=100).granted
    time.sleep(0.15)
    assert gate.acquire(CA, limits, lease_ms=100).granted


def test_the_rate_allows_a_tenth_of_a_second_of_burst_then_says_when_to_come_back(gate):
    limits = CaLimits(concurrency=1000, rate_per_second=100)
    granted = [gate.acquire(CA, limits, lease_ms=60_000) for _ in range(10)]
    assert all(d.granted for d in granted)
    refused = gate.acquire(CA, limits, lease_ms=60_000)
    assert (refused.granted, refused.reason) == (False, "rate")
    assert 0 < refused.retry_in_ms <= 10
    time.sleep(refused.retry_in_ms / 1000 + 0.002)
    assert gate.acquire(CA, limits, lease_ms=60_000).granted
    assert not gate.acquire(CA, limits, lease_ms=60_000).granted  # one start per 10 ms from now on


def test_the_circuit_opens_after_failures_in_a_row_lets_one_probe_through_and_closes_on_success(gate):
    for _ in range(CIRCUIT_THRESHOLD - 1):
        assert not down(gate).open  # one device's trouble so far
    gate.finish(CA, "", outcome="ok", cap_ms=60_000, jitter=0)  # someone else got through: count afresh
    for _ in range(CIRCUIT_THRESHOLD - 1):
        assert not down(gate).open
    circuit = down(gate)
    assert circuit.open and 400 < circuit.retry_in_ms <= 500  # equal jitter of the first second
    assert abs(circuit.down_since_ms / 1000 - time.time()) < 5
    refused = gate.acquire(CA, WIDE, lease_ms=60_000)
    assert (refused.granted, refused.reason) == (False, "circuit")
    time.sleep(circuit.retry_in_ms / 1000 + 0.02)
    probe = gate.acquire(CA, WIDE, lease_ms=60_000)
    assert probe.granted
    others = gate.acquire(CA, WIDE, lease_ms=60_000)
    assert (others.granted, others.reason) == (False, "circuit") and others.retry_in_ms <= 1000
    reopened = down(gate, probe.token)  # the probe failed: open again, for longer
    assert reopened.open and 900 < reopened.retry_in_ms <= 1000
    time.sleep(reopened.retry_in_ms / 1000 + 0.02)
    probe = gate.acquire(CA, WIDE, lease_ms=60_000)
    assert probe.granted
    gate.finish(CA, probe.token, outcome="ok", cap_ms=60_000, jitter=0)  # the CA is back
    assert all(gate.acquire(CA, WIDE, lease_ms=60_000).granted for _ in range(20))


def test_a_probe_that_learns_nothing_lets_the_next_probe_start_at_once(gate):
    for _ in range(CIRCUIT_THRESHOLD):
        circuit = down(gate)
    time.sleep(circuit.retry_in_ms / 1000 + 0.02)
    probe = gate.acquire(CA, WIDE, lease_ms=60_000)
    assert probe.granted and not gate.acquire(CA, WIDE, lease_ms=60_000).granted
    # The probing device failed on its own (say, its key was refused): nothing known about the CA.
    gate.finish(CA, probe.token, outcome="unknown", cap_ms=60_000, jitter=0)
    # Not a whole lease of waiting for everyone: another enrollment probes straight away.
    assert gate.acquire(CA, WIDE, lease_ms=60_000).granted


@pytest.mark.redis
def test_two_worker_processes_share_one_ca_s_limits(redis_db7):
    first, second = RedisCaGate.from_url(REDIS_URL), RedisCaGate.from_url(REDIS_URL)
    try:
        limits = CaLimits(concurrency=4, rate_per_second=100_000)
        answers = [g.acquire(CA, limits, lease_ms=60_000) for g in (first, second) * 3]
        assert [d.granted for d in answers] == [True] * 4 + [False] * 2
        for _ in range(CIRCUIT_THRESHOLD):
            circuit = second.finish(CA, "", outcome="down", cap_ms=60_000, jitter=0.5)
        assert circuit.open
        assert first.acquire(CA, limits, lease_ms=60_000).reason == "circuit"
    finally:
        first.close()
        second.close()


# --- waiting for the CA: what a job does ------------------------------------------------------------


def est_object(**limits):
    return SimpleNamespace(enrollment_type="est", enrollment_url=CA + "/.well-known/est/",
                           ca_concurrency_limit=limits.get("concurrency"), ca_rate_limit=limits.get("rate"))


def refused_by_ca():
    raise TransientError("device FTD-000001, trustpoint vpn: CA at https://127.0.0.1:8443/ unreachable: "
                         "connection refused", code="ca_connection_refused")


def enroll(gate, obj, settings, body, **kw):
    with through_ca_gate(gate, obj, settings, rng=random.Random(1), **kw):
        body()


def test_a_ca_outage_turns_into_waiting_once_the_circuit_opens_and_nobody_calls_the_ca_meanwhile():
    gate, settings = MemoryCaGate(), Settings()
    for _ in range(CIRCUIT_THRESHOLD - 1):  # ordinary retries: it may be these devices' trouble
        with pytest.raises(TransientError) as caught:
            enroll(gate, est_object(), settings, refused_by_ca)
        assert not isinstance(caught.value, CaWait)
    with pytest.raises(CaWait) as waiting:
        enroll(gate, est_object(), settings, refused_by_ca)
    assert waiting.value.code == "ca_connection_refused" and waiting.value.retry_in > 0
    assert "CA at https://127.0.0.1:8443 unavailable" in waiting.value.message
    calls = []
    with pytest.raises(CaWait) as waiting:
        enroll(gate, est_object(), settings, lambda: calls.append(1))
    assert calls == [] and waiting.value.code == "ca_unavailable"
    assert "unavailable since" in waiting.value.message


def test_an_outage_longer_than_the_give_up_time_fails_the_job_saying_since_when():
    gate, settings = MemoryCaGate(), Settings(ca_outage_give_up_seconds=0.05)
    for _ in range(CIRCUIT_THRESHOLD - 1):
        with pytest.raises(TransientError):
            enroll(gate, est_object(), settings, refused_by_ca)
    time.sleep(0.1)
    with pytest.raises(PermanentError) as gave_up:
        enroll(gate, est_object(), settings, refused_by_ca)
    assert gave_up.value.code == "ca_unavailable"
    assert "unavailable since" in gave_up.value.message
    assert "CERTFLEET_CA_OUTAGE_GIVE_UP_SECONDS" in gave_up.value.message


def test_a_ca_at_its_rate_is_waited_for_in_the_thread_briefly_then_the_job_waits_queued():
    gate, settings = MemoryCaGate(), Settings()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    fast = est_object(rate=20)  # the object's own limit wins over the settings'
    for _ in range(3):  # 20/s: a tenth of a second's burst (two), then one every 50 ms
        enroll(gate, fast, settings, lambda: None, sleep=sleep)
    assert len(slept) == 1 and 0.02 < slept[0] <= 0.05
    slow = SimpleNamespace(**{**vars(fast), "enrollment_url": "https://slow-ca:443/", "ca_rate_limit": 0.5})
    enroll(gate, slow, settings, lambda: None)
    with pytest.raises(CaWait) as waiting:  # the next turn is 2 s away: longer than a thread waits
        enroll(gate, slow, settings, lambda: None, sleep=sleep)
    assert waiting.value.code == "ca_busy" and "rate limit 0.5/s" in waiting.value.message
    assert 1.9 < waiting.value.retry_in <= 2.0 and len(slept) == 1


def test_other_enrollment_types_do_not_go_through_the_gate():
    gate = MemoryCaGate()
    # A URL and limits that would stop the second enrollment, were the type not exempt.
    obj = SimpleNamespace(enrollment_type="self_signed", enrollment_url=CA + "/", ca_concurrency_limit=1,
                          ca_rate_limit=0.001)
    for _ in range(5):
        enroll(gate, obj, Settings(), lambda: None)


def test_waiting_jobs_come_back_later_each_time_spread_out_and_capped():
    settings = Settings(retry_backoff_ms=500, ca_backoff_max_ms=60_000)
    rng = random.Random(7)
    busy = CaWait("busy", code="ca_busy", retry_in=0.01)
    delays = [park_delay_ms(waits, busy, settings, rng=rng) for waits in range(12)]
    assert 250 <= delays[0] <= 500 and 30_000 <= delays[-1] <= 60_000
    assert all(d <= 60_000 for d in delays)
    outage = CaWait("down", code="ca_unavailable", retry_in=8.0)
    herd = [park_delay_ms(0, outage, settings, rng=rng) for _ in range(200)]
    assert min(herd) >= 8000 and max(herd) <= 16_000 and max(herd) - min(herd) > 4000


# --- an enrollment object's own CA limits, through the API ---------------------------------------


def test_an_est_object_carries_its_own_ca_limits_and_others_refuse_them(api):
    path = f"/domains/{GLOBAL}/enrollment-objects"
    est = dict(name="vpn-est", enrollment_type="est", enrollment_url="https://ca.example.com/",
               key_type="ecdsa", key_size=256)
    created = api.ok("POST", path, {**est, "ca_concurrency_limit": 8, "ca_rate_limit": 2.5}, status=201)
    assert (created["ca_concurrency_limit"], created["ca_rate_limit"]) == (8, 2.5)
    default = api.ok("POST", path, {**est, "name": "vpn-est-2"}, status=201)
    assert (default["ca_concurrency_limit"], default["ca_rate_limit"]) == (None, None)
    for bad in ({"ca_rate_limit": 0}, {"ca_concurrency_limit": 0}, {"ca_rate_limit": -1}):
        problem(api.call("POST", path, json={**est, "name": "bad", **bad}), 422, "validation_error")
    refused = problem(api.call("POST", path, json={"name": "self", "enrollment_type": "self_signed",
                                                   "key_type": "ecdsa", "key_size": 256, "ca_rate_limit": 5}),
                      422, "field_not_applicable")
    assert "ca_rate_limit applies to EST and SCEP" in refused["detail"]


def test_without_its_own_limits_an_object_gets_the_settings_limits():
    settings = Settings(ca_concurrency=7, ca_rate_per_second=12.5)
    plain = SimpleNamespace(ca_concurrency_limit=None, ca_rate_limit=None)
    own = SimpleNamespace(ca_concurrency_limit=2, ca_rate_limit=0.5)
    assert (limits_for(plain, settings).concurrency, limits_for(plain, settings).rate_per_second) == (7, 12.5)
    assert (limits_for(own, settings).concurrency, limits_for(own, settings).rate_per_second) == (2, 0.5)
