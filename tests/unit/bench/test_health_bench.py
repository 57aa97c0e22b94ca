"""How the health benchmark judges a pass (bench/health.py; `make bench` fails on a miss): within the
5-minute interval, and within a third of the machine's CPU over it, as measured and scaled to 50,000."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench_health",
                                              Path(__file__).resolve().parents[3] / "bench" / "health.py")
health = importlib.util.module_from_spec(spec)
spec.loader.exec_module(health)


def judged(wall: float, cpu: float, *, devices: int = 50_000, cores: int = 2) -> dict:
    return health.verdict({"wall_seconds": wall, "certfleet_cpu_seconds": cpu}, devices=devices, cores=cores)


@pytest.mark.parametrize(("cpu", "fits"), [(200.0, True), (200.01, False)])
def test_a_pass_may_use_a_third_of_two_cores_over_five_minutes(cpu, fits):
    verdict = judged(100.0, cpu)
    assert verdict["cpu_budget_seconds"] == 200.0
    assert verdict["measured_fits"] is fits and verdict["at_50000_devices"]["fits"] is fits


@pytest.mark.parametrize(("wall", "fits"), [(300.0, True), (300.01, False)])
def test_a_pass_must_end_within_its_interval(wall, fits):
    assert judged(wall, 10.0)["at_50000_devices"]["fits"] is fits


def test_a_smaller_run_is_scaled_to_fifty_thousand_devices():
    verdict = judged(5.0, 21.0, devices=5000)
    assert verdict["measured_fits"] is True
    assert verdict["at_50000_devices"] == {"wall_seconds": 50.0, "certfleet_cpu_seconds": 210.0, "scaled_from": 5000,
                                           "fits": False}
