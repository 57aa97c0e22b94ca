"""The alert rules as the real Prometheus tools see them: ``promtool check`` accepts the configuration
and the rules, ``amtool`` the Alertmanager configuration, and ``promtool test rules`` runs the tests of
deploy/prometheus/tests/, which give every rule input series where it fires (with its labels and
annotations) and where it must stay quiet (at its threshold, and pending within its ``for:``).

promtool and amtool come from Debian's prometheus and prometheus-alertmanager (make peers); a
missing tool skips these tests, and fails them under CI=true."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.support.ca_peers import tool

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
RULES = [rule for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
         for rule in group["rules"]]


def promtool() -> str:
    return tool("promtool", "apt-get install prometheus")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, cwd=cwd)


def test_prometheus_accepts_the_configuration_and_the_rules():
    checked = run(promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in checked.stdout  # the rule file the configuration names
    rules = run(promtool(), "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_alertmanager_accepts_its_configuration():
    checked = run(tool("amtool", "apt-get install prometheus-alertmanager"), "check-config",
                  str(ROOT / "deploy" / "alertmanager" / "alertmanager.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_rule_passes_its_promtool_tests():
    """One promtool run for every test file."""
    tested = run(promtool(), "test", "rules", *map(str, TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(TESTS)


@cache
def cases() -> list[dict]:
    found = []
    for path in TESTS:
        document = yaml.safe_load(path.read_text())
        assert document["rule_files"] == ["../alerts.yml"], path.name
        found += document["tests"]
    return found


def duration_minutes(text: str) -> float:
    number, unit = float(text[:-1]), text[-1]
    return number * {"s": 1 / 60, "m": 1, "h": 60, "d": 1440}[unit]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule["alert"])
def test_every_rule_is_tested_where_it_fires_and_where_it_must_not(rule):
    name = rule["alert"]
    firing, quiet, pending_then_firing = [], [], False
    for case in cases():
        checks = [c for c in case.get("alert_rule_test", []) if c["alertname"] == name]
        fired = [duration_minutes(c["eval_time"]) for c in checks if c["exp_alerts"]]
        silent = [duration_minutes(c["eval_time"]) for c in checks if not c["exp_alerts"]]
        firing += [alert for c in checks for alert in c["exp_alerts"]]
        quiet += silent
        # Its for: at the edge: quiet one evaluation before it fires, in the same series.
        if fired and any(min(fired) - 1 <= t < min(fired) for t in silent):
            pending_then_firing = True
    assert firing, f"{name}: no test where it fires"
    assert quiet, f"{name}: no test where it must stay quiet"
    for alert in firing:
        assert alert["exp_labels"]["severity"] == rule["labels"]["severity"], name
        assert set(alert["exp_annotations"]) == {"summary", "description"}, name
    if "for" in rule:
        assert pending_then_firing, f"{name}: no test of its for: {rule['for']} (quiet one minute before firing)"


def test_a_rule_changed_under_its_tests_fails_them(tmp_path):
    """The tests hold the rules to their thresholds and durations: fire 10 minutes early, and promtool
    says which rule and when."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, copy)
    rules = (copy / "alerts.yml").read_text()
    marker = "max(certfleet_certificates_expiring{within_days=\"30\"}) > 0\n        for: 15m"
    assert marker in rules
    (copy / "alerts.yml").write_text(rules.replace(marker, marker.replace("15m", "5m")))
    tested = run(promtool(), "test", "rules", "tests/certificates.yml", cwd=copy)
    said = tested.stdout + tested.stderr
    assert tested.returncode != 0
    assert "FAILED" in said and "alertname: CertfleetCertificatesExpiringIn30Days, time: 16m" in said
