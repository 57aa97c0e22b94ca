"""The benchmark's verdict on the issue's targets (bench/fleet.py prints it and `make bench`
fails on a miss): judged on the right figures, and a miss is a miss."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_fleet", Path(__file__).resolve().parents[3] / "bench" / "fleet.py")
fleet = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fleet)

RUNS = [{"devices": 5000, "seconds": 44.9, "list_api_p99_ms": 88.9},
        {"devices": 10000, "seconds": 79.9, "list_api_p99_ms": 83.6},
        {"devices": 50000, "seconds": 454.3, "list_api_p99_ms": 123.9}]
SCALING = {"cost_per_device_ratio": 1.011,
           "rss_ratio": {"device-sim": 3.47, "controller": 1.131, "worker-0": 1.006, "worker-1": 1.007, "ca": 1.02}}


def test_the_recorded_figures_meet_every_target():
    verdict = fleet.targets(RUNS, SCALING)
    assert verdict["all_met"], verdict
    assert verdict["checks"]["10000_devices_within_90_s"] == {"figure": 79.9, "met": True}
    # The simulator holds every device's keys: its growth is not the product's, and not judged.
    assert not any(name.startswith(("device-sim", "ca_")) for name in verdict["checks"])


def test_each_missed_target_is_reported():
    slow = [dict(RUNS[0]), {**RUNS[1], "seconds": 91.0}, {**RUNS[2], "list_api_p99_ms": 250.0}]
    fat = {"cost_per_device_ratio": 1.3, "rss_ratio": {**SCALING["rss_ratio"], "controller": 1.4}}
    verdict = fleet.targets(slow, fat)
    missed = {name for name, check in verdict["checks"].items() if not check["met"]}
    assert not verdict["all_met"]
    assert missed == {"10000_devices_within_90_s", "list_api_p99_under_200_ms_at_50000",
                      "cost_per_device_ratio_at_most_1.25", "controller_rss_ratio_at_most_1.3"}
