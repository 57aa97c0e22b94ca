"""The CA gate's rules as scenarios any gate must pass, in-process or in Redis: each takes a gate
timed by a :class:`tests.support.clock.ManualClock` and that clock, moves time itself and
checks the answers to the millisecond."""

from __future__ import annotations

from services.worker.ca_gate import CIRCUIT_THRESHOLD, CaGate, CaLimits
from tests.support.clock import ManualClock

CA = "https://127.0.0.1:8443"
WIDE = CaLimits(concurrency=1000, rate_per_second=100_000)
LEASE_MS = 60_000


def down(gate: CaGate, token: str = "", *, jitter: float = 0.0, cap_ms: float = 60_000):
    return gate.finish(CA, token, outcome="down", cap_ms=cap_ms, jitter=jitter)


def open_circuit(gate: CaGate, *, jitter: float = 0.0, cap_ms: float = 60_000):
    for _ in range(CIRCUIT_THRESHOLD):
        circuit = down(gate, jitter=jitter, cap_ms=cap_ms)
    return circuit


def concurrency_is_capped_and_a_finished_permit_frees_a_slot(gate: CaGate, clock: ManualClock) -> None:
    limits = CaLimits(concurrency=3, rate_per_second=100_000)
    held = [gate.acquire(CA, limits, lease_ms=LEASE_MS) for _ in range(3)]
    assert all(d.granted for d in held) and len({d.token for d in held}) == 3
    refused = gate.acquire(CA, limits, lease_ms=LEASE_MS)
    assert (refused.granted, refused.reason) == (False, "concurrency")
    gate.finish(CA, held[0].token, outcome="ok", cap_ms=60_000, jitter=0)
    assert gate.acquire(CA, limits, lease_ms=LEASE_MS).granted
    assert not gate.acquire(CA, limits, lease_ms=LEASE_MS).granted
    # Another CA endpoint has its own slots.
    assert gate.acquire("https://other-ca:443", limits, lease_ms=LEASE_MS).granted


def a_permit_of_a_killed_worker_frees_itself_when_its_lease_ends(gate: CaGate, clock: ManualClock) -> None:
    limits = CaLimits(concurrency=1, rate_per_second=100_000)
    assert gate.acquire(CA, limits, lease_ms=LEASE_MS).granted  # never finished: its worker died
    clock.advance(ms=LEASE_MS - 1)
    assert gate.acquire(CA, limits, lease_ms=LEASE_MS).reason == "concurrency"
    clock.advance(ms=1)
    assert gate.acquire(CA, limits, lease_ms=LEASE_MS).granted


def the_rate_allows_a_tenth_of_a_second_of_burst_then_says_when_to_come_back(
        gate: CaGate, clock: ManualClock) -> None:
    limits = CaLimits(concurrency=1000, rate_per_second=100)  # one start per 10 ms, bursts of 10
    assert all(gate.acquire(CA, limits, lease_ms=LEASE_MS).granted for _ in range(10))
    refused = gate.acquire(CA, limits, lease_ms=LEASE_MS)
    assert (refused.granted, refused.reason, refused.retry_in_ms) == (False, "rate", 10)
    clock.advance(ms=9)
    assert gate.acquire(CA, limits, lease_ms=LEASE_MS).retry_in_ms == 1
    clock.advance(ms=1)
    assert gate.acquire(CA, limits, lease_ms=LEASE_MS).granted
    assert gate.acquire(CA, limits, lease_ms=LEASE_MS).retry_in_ms == 10  # the burst is spent
    # A quiet second refills the burst, no more than that.
    clock.advance(1)
    assert all(gate.acquire(CA, limits, lease_ms=LEASE_MS).granted for _ in range(10))
    assert not gate.acquire(CA, limits, lease_ms=LEASE_MS).granted


def the_circuit_opens_after_failures_in_a_row_lets_one_probe_through_and_closes_on_success(
        gate: CaGate, clock: ManualClock) -> None:
    first_failure = clock.ms()
    for _ in range(CIRCUIT_THRESHOLD - 1):
        assert not down(gate).open  # one device's trouble so far
        clock.advance(ms=100)
    gate.finish(CA, "", outcome="ok", cap_ms=60_000, jitter=0)  # someone else got through: count afresh
    first_failure = clock.ms()
    for _ in range(CIRCUIT_THRESHOLD - 1):
        assert not down(gate).open
        clock.advance(ms=100)
    circuit = down(gate)
    # Open for the first second's equal jitter: half of it with jitter 0, since the first failure in a row.
    assert (circuit.open, circuit.retry_in_ms, circuit.down_since_ms) == (True, 500, first_failure)
    refused = gate.acquire(CA, WIDE, lease_ms=LEASE_MS)
    assert (refused.granted, refused.reason, refused.retry_in_ms) == (False, "circuit", 500)
    assert refused.down_since_ms == first_failure
    clock.advance(ms=499)
    assert gate.acquire(CA, WIDE, lease_ms=LEASE_MS).retry_in_ms == 1
    clock.advance(ms=1)
    probe = gate.acquire(CA, WIDE, lease_ms=LEASE_MS)
    assert probe.granted
    others = gate.acquire(CA, WIDE, lease_ms=LEASE_MS)
    assert (others.granted, others.reason, others.retry_in_ms) == (False, "circuit", 1000)  # ask again soon
    reopened = down(gate, probe.token)  # the probe failed: open again, for twice as long
    assert (reopened.open, reopened.retry_in_ms, reopened.down_since_ms) == (True, 1000, first_failure)
    clock.advance(ms=1000)
    probe = gate.acquire(CA, WIDE, lease_ms=LEASE_MS)
    assert probe.granted
    gate.finish(CA, probe.token, outcome="ok", cap_ms=60_000, jitter=0)  # the CA is back
    assert all(gate.acquire(CA, WIDE, lease_ms=LEASE_MS).granted for _ in range(20))
    assert not down(gate).open  # and its failures are counted afresh


def the_circuit_stays_open_longer_after_each_failed_probe_up_to_the_cap(gate: CaGate, clock: ManualClock) -> None:
    circuit = open_circuit(gate, jitter=1.0, cap_ms=4000)
    waits = [circuit.retry_in_ms]
    for _ in range(4):
        clock.advance(ms=circuit.retry_in_ms)
        probe = gate.acquire(CA, WIDE, lease_ms=LEASE_MS)
        assert probe.granted
        circuit = down(gate, probe.token, jitter=1.0, cap_ms=4000)
        waits.append(circuit.retry_in_ms)
    assert waits == [1000, 2000, 4000, 4000, 4000]


def a_probe_that_learns_nothing_lets_the_next_probe_start_at_once(gate: CaGate, clock: ManualClock) -> None:
    clock.advance(ms=open_circuit(gate).retry_in_ms)
    probe = gate.acquire(CA, WIDE, lease_ms=LEASE_MS)
    assert probe.granted and not gate.acquire(CA, WIDE, lease_ms=LEASE_MS).granted
    # The probing device failed on its own (say, its key was refused): nothing known about the CA.
    gate.finish(CA, probe.token, outcome="unknown", cap_ms=60_000, jitter=0)
    # Not a whole lease of waiting for everyone: another enrollment probes straight away.
    assert gate.acquire(CA, WIDE, lease_ms=LEASE_MS).granted


def a_probe_whose_worker_died_lets_another_probe_once_its_lease_ends(gate: CaGate, clock: ManualClock) -> None:
    clock.advance(ms=open_circuit(gate).retry_in_ms)
    assert gate.acquire(CA, WIDE, lease_ms=LEASE_MS).granted  # the probe; its worker never finishes it
    clock.advance(ms=LEASE_MS - 1)
    waiting = gate.acquire(CA, WIDE, lease_ms=LEASE_MS)
    assert (waiting.reason, waiting.retry_in_ms) == ("circuit", 1)
    clock.advance(ms=1)
    assert gate.acquire(CA, WIDE, lease_ms=LEASE_MS).granted


def a_permit_given_back_with_the_next_acquire_frees_its_slot_and_closes_the_circuit(
        gate: CaGate, clock: ManualClock) -> None:
    one = CaLimits(concurrency=1, rate_per_second=100_000)
    first = gate.acquire(CA, one, lease_ms=LEASE_MS)
    assert first.granted and not gate.acquire(CA, one, lease_ms=LEASE_MS).granted
    second = gate.acquire(CA, one, lease_ms=LEASE_MS, releasing=first.token)  # one step: back, then anew
    assert second.granted and second.token != first.token
    assert not gate.acquire(CA, one, lease_ms=LEASE_MS).granted  # the slot is the new permit's
    # A probe that went well, given back with the next acquire: the circuit closes, failures start afresh.
    clock.advance(ms=open_circuit(gate).retry_in_ms)
    gate.finish(CA, second.token, outcome="unknown", cap_ms=60_000, jitter=0)
    probe = gate.acquire(CA, WIDE, lease_ms=LEASE_MS)
    assert probe.granted
    assert gate.acquire(CA, WIDE, lease_ms=LEASE_MS, releasing=probe.token).granted
    assert all(gate.acquire(CA, WIDE, lease_ms=LEASE_MS).granted for _ in range(5))
    assert not down(gate).open


RULES = [
    concurrency_is_capped_and_a_finished_permit_frees_a_slot,
    a_permit_of_a_killed_worker_frees_itself_when_its_lease_ends,
    the_rate_allows_a_tenth_of_a_second_of_burst_then_says_when_to_come_back,
    the_circuit_opens_after_failures_in_a_row_lets_one_probe_through_and_closes_on_success,
    the_circuit_stays_open_longer_after_each_failed_probe_up_to_the_cap,
    a_probe_that_learns_nothing_lets_the_next_probe_start_at_once,
    a_probe_whose_worker_died_lets_another_probe_once_its_lease_ends,
    a_permit_given_back_with_the_next_acquire_frees_its_slot_and_closes_the_circuit,
]
