"""``bench/renewal.py`` on a tiny fleet: its JSON lines carry the figures the README quotes, and a
run where every due trustpoint is renewed once passes its targets. Hourly ticks keep the
simulated day to a few dozen passes."""

from __future__ import annotations

import json

import pytest

from bench import renewal
from tests.support.pg import postgres_or_skip

pytestmark = pytest.mark.postgres


def test_a_tiny_renewal_day_prints_every_figure_and_meets_its_targets(capsys):
    postgres_or_skip()
    code = renewal.main(["--trustpoints", "200", "--not-due-share", "0.5", "--tick-seconds", "3600"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {line["benchmark"]: line for line in lines}
    assert code == 0, by_name.get("renewal_targets")

    day = by_name["renewal_pass"]
    assert day["renewals_published"] == day["trustpoints_renewed"] == 200
    assert day["trustpoints_not_to_renew"] == {"later": 70, "not_renewable_same_day": 10,
                                               "auto_renew_off_same_day": 10, "no_renewal_time": 10}
    for figure in ("pass_ms_p99", "pass_ms_max", "idle_pass_ms_before", "max_renewals_started_per_minute",
                   "promised_per_minute", "db_cpu_ms_per_pass_mean"):
        assert day[figure] > 0, figure
    assert day["db_cpu_source"].startswith("/proc/")

    plan = by_name["renewal_candidate_query_plan"]
    assert {"before_the_day", "midday", "after_the_day"} <= plan.keys()
    assert any("trustpoint" in line for line in plan["plan_at_midday"])

    assert by_name["renewal_targets"]["checks"]["each_due_trustpoint_renewed_once_at_200"]["met"]
