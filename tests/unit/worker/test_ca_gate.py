"""The CA gate in process: concurrency, rate and outages of one CA endpoint, and how an enrollment
waits for its CA without failing. Time is a ManualClock: every wait is checked to the
millisecond, and nothing sleeps. (The gate in Redis passes the same rules:
tests/integration/worker/test_ca_gate_redis.py.)"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from services.worker.ca_gate import CIRCUIT_THRESHOLD, CaLimits, MemoryCaGate, ca_endpoint
from services.worker.ca_waiting import CaWait, PermitCarry, limits_for, park_delay_ms, through_ca_gate
from shared.errors import PermanentError, TransientError, ValidationError
from shared.settings import Settings
from tests.support.ca_gate_rules import CA, RULES
from tests.support.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gate(clock) -> MemoryCaGate:
    return MemoryCaGate(clock_ms=clock.ms)


def test_endpoints_are_scheme_host_and_port():
    assert ca_endpoint("https://CA.Example.com/.well-known/est/") == "https://ca.example.com:443"
    assert ca_endpoint("http://10.0.0.5/certsrv/mscep/mscep.dll") == "http://10.0.0.5:80"
    assert ca_endpoint("https://[2001:DB8::5]:8443/") == "https://[2001:db8::5]:8443"
    with pytest.raises(ValidationError):
        ca_endpoint("ftp://ca.example.com/")


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_the_gate_in_process_follows_the_rules(gate, clock, rule):
    rule(gate, clock)


# --- waiting for the CA: what a job does ------------------------------------------------------------


def est_object(**limits):
    return SimpleNamespace(enrollment_type="est", enrollment_url=CA + "/.well-known/est/",
                           ca_concurrency_limit=limits.get("concurrency"), ca_rate_limit=limits.get("rate"))


def refused_by_ca():
    raise TransientError("device FTD-000001, trustpoint vpn: CA at https://127.0.0.1:8443/ unreachable: "
                         "connection refused", code="ca_connection_refused")


def enroll(gate, obj, settings, body, clock: ManualClock, **kw):
    with through_ca_gate(gate, obj, settings, rng=random.Random(1), sleep=clock.sleep, clock=clock.monotonic,
                         wall_clock=clock, **kw):
        body()


def test_a_ca_outage_turns_into_waiting_once_the_circuit_opens_and_nobody_calls_the_ca_meanwhile(gate, clock):
    settings = Settings()
    for _ in range(CIRCUIT_THRESHOLD - 1):  # ordinary retries: it may be these devices' trouble
        with pytest.raises(TransientError) as caught:
            enroll(gate, est_object(), settings, refused_by_ca, clock)
        assert not isinstance(caught.value, CaWait)
    with pytest.raises(CaWait) as waiting:
        enroll(gate, est_object(), settings, refused_by_ca, clock)
    assert waiting.value.code == "ca_connection_refused" and waiting.value.retry_in > 0
    assert "CA at https://127.0.0.1:8443 unavailable" in waiting.value.message
    calls = []
    with pytest.raises(CaWait) as waiting:
        enroll(gate, est_object(), settings, lambda: calls.append(1), clock)
    assert calls == [] and waiting.value.code == "ca_unavailable"
    assert waiting.value.message == ("CA at https://127.0.0.1:8443 unavailable since 2030-01-01 12:00:00 UTC, "
                                     "waiting for it")


@pytest.mark.parametrize(("down_for_ms", "gives_up"), [(3_600_000, False), (3_600_001, True)])
def test_an_outage_longer_than_the_give_up_time_fails_the_job_saying_since_when(gate, clock, down_for_ms,
                                                                               gives_up):
    settings = Settings(ca_outage_give_up_seconds=3600)
    for _ in range(CIRCUIT_THRESHOLD - 1):
        with pytest.raises(TransientError):
            enroll(gate, est_object(), settings, refused_by_ca, clock)
    clock.advance(ms=down_for_ms)
    with pytest.raises(PermanentError if gives_up else CaWait) as caught:
        enroll(gate, est_object(), settings, refused_by_ca, clock)
    if not gives_up:
        assert caught.value.code == "ca_connection_refused"
        return
    assert caught.value.code == "ca_unavailable"
    assert caught.value.message.startswith(
        "CA at https://127.0.0.1:8443 unavailable since 2030-01-01 12:00:00 UTC, 60 min (last: device FTD-000001")
    assert caught.value.message.endswith(
        "gave up waiting after 60 min (CERTFLEET_CA_OUTAGE_GIVE_UP_SECONDS): start the enrollment again once "
        "the CA is back")


def test_a_job_finding_the_circuit_open_past_the_give_up_time_fails_without_calling_the_ca(gate, clock):
    settings = Settings(ca_outage_give_up_seconds=60)
    for failure in range(CIRCUIT_THRESHOLD - 1):
        with pytest.raises(TransientError):
            enroll(gate, est_object(), settings, refused_by_ca, clock)
        if failure == 0:
            clock.advance(60)  # the CA has been failing for a minute when the others fail
    with pytest.raises(CaWait):
        enroll(gate, est_object(), settings, refused_by_ca, clock)  # the circuit opens: just not too long yet
    clock.advance(ms=1)
    calls = []
    with pytest.raises(PermanentError) as gave_up:
        enroll(gate, est_object(), settings, lambda: calls.append(1), clock)
    assert calls == [] and gave_up.value.code == "ca_unavailable"
    assert "unavailable since 2030-01-01 12:00:00 UTC, 1 min; gave up waiting after 1 min" in gave_up.value.message


def test_a_ca_at_its_rate_is_waited_for_in_the_thread_briefly_then_the_job_waits_queued(gate, clock):
    settings = Settings()
    fast = est_object(rate=20)  # the object's own limit wins over the settings'
    for _ in range(3):  # 20/s: a tenth of a second's burst (two), then one every 50 ms
        enroll(gate, fast, settings, lambda: None, clock)
    assert clock.slept == [0.05]
    slow = SimpleNamespace(**{**vars(fast), "enrollment_url": "https://slow-ca:443/", "ca_rate_limit": 0.5})
    enroll(gate, slow, settings, lambda: None, clock)
    with pytest.raises(CaWait) as waiting:  # the next turn is 2 s away: longer than a thread waits
        enroll(gate, slow, settings, lambda: None, clock)
    assert waiting.value.code == "ca_busy" and waiting.value.retry_in == 2.0
    assert waiting.value.message == "CA at https://slow-ca:443 at its rate limit 0.5/s, waiting for a turn"
    assert clock.slept == [0.05]


def test_a_ca_at_its_concurrency_is_polled_for_a_second_then_the_job_waits_queued(gate, clock):
    settings = Settings()
    obj = est_object(concurrency=1)
    with through_ca_gate(gate, obj, settings, rng=random.Random(1), sleep=clock.sleep, clock=clock.monotonic,
                         wall_clock=clock):
        with pytest.raises(CaWait) as waiting:
            enroll(gate, obj, settings, lambda: None, clock)
    assert waiting.value.code == "ca_busy" and waiting.value.retry_in == 0.05
    assert waiting.value.message == "CA at https://127.0.0.1:8443 at its concurrency limit 1, waiting for a turn"
    assert set(clock.slept) == {0.05} and 19 <= len(clock.slept) <= 20  # polled until its second was up
    # The slot is free again: the next enrollment goes at once.
    clock.slept.clear()
    enroll(gate, obj, settings, lambda: None, clock)
    assert clock.slept == []


def test_a_slot_freed_while_a_job_polls_is_taken(gate, clock):
    obj = est_object(concurrency=1)
    held = gate.acquire(CA, CaLimits(concurrency=1, rate_per_second=100), lease_ms=60_000)
    assert held.granted and ca_endpoint(obj.enrollment_url) == CA

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.slept) == 3:  # the other enrollment finishes meanwhile
            gate.finish(CA, held.token, outcome="ok", cap_ms=60_000, jitter=0)

    ran = []
    with through_ca_gate(gate, obj, Settings(), rng=random.Random(1), sleep=sleep, clock=clock.monotonic,
                         wall_clock=clock):
        ran.append("enrolled")
    assert ran == ["enrolled"] and clock.slept == [0.05, 0.05, 0.05]


def test_other_enrollment_types_do_not_go_through_the_gate(gate, clock):
    # A URL and limits that would stop the second enrollment, were the type not exempt.
    limits = {"enrollment_url": CA + "/", "ca_concurrency_limit": 1, "ca_rate_limit": 0.001}
    calls = []
    for kind in ("self_signed", "manual", "pkcs12"):
        obj = SimpleNamespace(enrollment_type=kind, **limits)
        for _ in range(3):
            enroll(gate, obj, Settings(), lambda: calls.append(1), clock)
    assert len(calls) == 9 and clock.slept == []
    # Nothing was counted against the CA: an EST enrollment with those limits still goes at once.
    est = SimpleNamespace(enrollment_type="est", **limits)
    enroll(gate, est, Settings(), lambda: calls.append(1), clock)
    assert len(calls) == 10


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


def test_without_its_own_limits_an_object_gets_the_settings_limits():
    settings = Settings(ca_concurrency=7, ca_rate_per_second=12.5)
    plain = SimpleNamespace(ca_concurrency_limit=None, ca_rate_limit=None)
    own = SimpleNamespace(ca_concurrency_limit=2, ca_rate_limit=0.5)
    assert (limits_for(plain, settings).concurrency, limits_for(plain, settings).rate_per_second) == (7, 12.5)
    assert (limits_for(own, settings).concurrency, limits_for(own, settings).rate_per_second) == (2, 0.5)



# --- what the CA endpoints dashboard counts --------------------------------------------------------


def counted(name: str, endpoint: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"endpoint": endpoint, **labels}) or 0.0


def counts(endpoint: str) -> dict[str, float]:
    found = {f"exchanges {o}": counted("certfleet_ca_exchanges_total", endpoint, outcome=o)
             for o in ("succeeded", "ca_unavailable", "failed")}
    found |= {f"waits {r}": counted("certfleet_ca_gate_waits_total", endpoint, reason=r)
              for r in ("circuit", "concurrency", "rate")}
    return found


def test_waits_and_exchanges_are_counted_per_ca_endpoint(gate, clock):
    """An outage's failed exchanges (the last opens the circuit: its job waits), a job finding the
    circuit open (a wait, no exchange), a CA's refusal, a CA at its concurrency limit and one at its
    rate, a CA that answered: each counted under its own endpoint, nothing under another's."""
    down_ca, busy_ca = "https://down-ca.example.net:8443", "https://busy-ca.example.net:443"
    down_obj = SimpleNamespace(**{**vars(est_object()), "enrollment_url": down_ca + "/.well-known/est/"})
    busy_obj = SimpleNamespace(**{**vars(est_object(concurrency=1)), "enrollment_url": busy_ca + "/"})
    slow_obj = SimpleNamespace(**{**vars(est_object(rate=0.5)), "enrollment_url": busy_ca + "/"})
    before = {down_ca: counts(down_ca), busy_ca: counts(busy_ca)}
    settings = Settings()

    for _ in range(CIRCUIT_THRESHOLD - 1):
        with pytest.raises(TransientError):
            enroll(gate, down_obj, settings, refused_by_ca, clock)
    for body in (refused_by_ca, lambda: None):  # opens the circuit; finds it open
        with pytest.raises(CaWait):
            enroll(gate, down_obj, settings, body, clock)

    def refused():
        raise PermanentError("the CA refused the request", code="ca_rejected")

    with pytest.raises(PermanentError):
        enroll(gate, busy_obj, settings, refused, clock)
    with through_ca_gate(gate, busy_obj, settings, rng=random.Random(1), sleep=clock.sleep, clock=clock.monotonic,
                         wall_clock=clock):
        with pytest.raises(CaWait):
            enroll(gate, busy_obj, settings, lambda: None, clock)
    enroll(gate, slow_obj, settings, lambda: None, clock)
    with pytest.raises(CaWait):
        enroll(gate, slow_obj, settings, lambda: None, clock)

    def grew(endpoint: str) -> dict[str, float]:
        return {k: v - before[endpoint][k] for k, v in counts(endpoint).items() if v != before[endpoint][k]}

    assert grew(down_ca) == {"exchanges ca_unavailable": CIRCUIT_THRESHOLD, "waits circuit": 2}
    assert grew(busy_ca) == {"exchanges failed": 1, "exchanges succeeded": 2, "waits concurrency": 1,
                             "waits rate": 1}


def test_every_exchange_outcome_of_an_endpoint_is_exported_from_its_first_enrollment(gate, clock):
    """Before the first exchange with a CA ends, each of its outcomes is already a series at 0: a
    CA down from the start shows in its unavailable share (rate() sees the counter grow from 0)."""
    endpoint = "https://first-seen-ca.example.net:9443"
    obj = SimpleNamespace(**{**vars(est_object()), "enrollment_url": endpoint + "/"})
    outcomes = ("succeeded", "ca_unavailable", "failed")
    assert all(REGISTRY.get_sample_value("certfleet_ca_exchanges_total", {"endpoint": endpoint, "outcome": o})
               is None for o in outcomes)
    seen: dict[str, float | None] = {}

    def look():
        seen.update({o: REGISTRY.get_sample_value("certfleet_ca_exchanges_total",
                                                  {"endpoint": endpoint, "outcome": o}) for o in outcomes})

    enroll(gate, obj, Settings(), look, clock)
    assert seen == {"succeeded": 0.0, "ca_unavailable": 0.0, "failed": 0.0}
    assert counts(endpoint)["exchanges succeeded"] == 1.0


def test_a_batch_gives_a_permit_back_with_its_next_enrollment_with_that_ca(gate, clock):
    """One gate round trip per enrollment in a batch: a permit that went well is given back when the
    batch's next enrollment with the CA asks for its own, or when the batch ends."""
    calls = []
    real_acquire, real_finish = gate.acquire, gate.finish
    gate.acquire = lambda *a, **kw: calls.append(("acquire", kw.get("releasing", ""))) or real_acquire(*a, **kw)
    gate.finish = lambda *a, **kw: calls.append(("finish", kw["outcome"])) or real_finish(*a, **kw)
    settings = Settings(ca_concurrency=1)
    carry = PermitCarry(gate, settings)
    obj = est_object()
    for _ in range(3):  # concurrency 1: each enrollment needs the permit the one before held
        enroll(gate, obj, settings, lambda: None, clock, carry=carry)
    assert [name for name, _ in calls] == ["acquire", "acquire", "acquire"]
    assert [releasing != "" for _, releasing in calls] == [False, True, True]
    carry.flush()
    assert calls[-1] == ("finish", "ok")
    left = real_acquire(ca_endpoint(obj.enrollment_url), CaLimits(concurrency=1, rate_per_second=100),
                        lease_ms=60_000)
    assert left.granted  # nothing was left held
    real_finish(ca_endpoint(obj.enrollment_url), left.token, outcome="ok", cap_ms=1000, jitter=0)
    # A failure is given back at once, as outside a batch.
    with pytest.raises(TransientError):
        enroll(gate, obj, settings, refused_by_ca, clock, carry=carry)
    assert calls[-1] == ("finish", "down")
