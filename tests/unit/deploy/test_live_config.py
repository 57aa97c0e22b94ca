"""What the live observability test (tests/e2e/test_observability.py) reads from deploy/ and hands
to Prometheus and Alertmanager (tests/support/observability.py): every panel's query with the
dashboard's variables substituted, every rule file and no other, ``for:`` scaled down, the scrape
configuration pointed at the test's ports."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support import observability
from tests.support.observability import (
    alertmanager_config,
    dashboard_queries,
    duration_seconds,
    rule_files,
    scrape_config_for_test,
    substitute,
    variable_values,
    with_scaled_for,
)

DASHBOARD = {
    "title": "fleet",
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {"value": "abc"}},
        {"name": "days", "type": "custom", "query": "7,30", "current": {"text": "30", "value": "30"}},
        {"name": "method", "type": "query", "includeAll": True, "current": {"text": "All", "value": ["$__all"]}},
        {"name": "queue", "type": "custom", "query": "a,b", "current": {}, "options": [{"value": "a"}]},
        {"name": "codes", "type": "custom", "multi": True, "current": {"value": ["x", "y"]}},
    ]},
    "panels": [
        {"type": "row", "title": "open row", "panels": []},
        {"type": "stat", "title": "Expiring", "targets": [
            {"refId": "A", "expr": 'max(certfleet_certificates_expiring{within_days="$days"})'},
            {"refId": "B", "expr": "up", "hide": True},
        ]},
        {"type": "row", "title": "collapsed", "collapsed": True, "panels": [
            {"type": "timeseries", "title": "Rate", "targets": [
                {"refId": "A", "expr": 'sum(rate(x_total{method=~"${method}", q="[[queue]]"}[$__rate_interval]))'},
                {"refId": "B", "expr": 'sum(y{code=~"${codes:regex}"})'},
            ]},
        ]},
    ],
}


def test_every_visible_query_of_every_panel_with_its_variables_substituted(tmp_path):
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(DASHBOARD))
    queries = dashboard_queries([path])
    assert [(q.panel, q.ref_id, q.query) for q in queries] == [
        ("Expiring", "A", 'max(certfleet_certificates_expiring{within_days="30"})'),
        ("Rate", "A", 'sum(rate(x_total{method=~".*", q="a"}[5m]))'),
        ("Rate", "B", 'sum(y{code=~"(x|y)"})'),
    ]
    assert queries[1].where() == "fleet / Rate / A" and "${method}" in queries[1].expr


def test_variables_take_their_values_as_the_dashboard_opens():
    assert variable_values(DASHBOARD) == {"days": "30", "method": ".*", "queue": "a", "codes": "(x|y)"}


def test_an_unknown_variable_is_named():
    with pytest.raises(KeyError, match=r"\$window"):
        substitute("rate(x[$window])", {})
    # A regex's end anchor is no variable.
    assert substitute('x{a=~"b$"}', {}) == 'x{a=~"b$"}'


def test_the_deployed_dashboards_use_only_known_variables():
    queries = dashboard_queries()
    assert queries
    assert not [q for q in queries if "$" in q.query.replace('$"', "")], "a variable left in a query"


def test_rule_files_are_those_with_groups_and_no_tests(tmp_path):
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": []}))
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "A", "expr": "up == 0"}, {"record": "job:up:sum", "expr": "sum(up)"}]}]}))
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "tests": []}))
    assert rule_files(tmp_path) == [tmp_path / "alerts.yml"]
    assert observability.alert_rules([tmp_path / "alerts.yml"]) == [{"alert": "A", "expr": "up == 0"}]
    assert observability.PROMETHEUS_DIR / "alerts.yml" in rule_files()


def test_durations_are_read_as_prometheus_writes_them():
    assert [duration_seconds(d) for d in ("90s", "15m", "1h30m", "500ms", "2d")] == [90, 900, 5400, 0.5, 172800]
    for bad in ("15 minutes", "m", "1.5h", ""):
        with pytest.raises(ValueError):
            duration_seconds(bad)


def test_for_durations_are_scaled_and_capped_keeping_their_order():
    rules = {"groups": [{"name": "g", "rules": [
        {"alert": name, "expr": "1", **({"for": wait} if wait else {})}
        for name, wait in [("A", "30s"), ("B", "1m"), ("C", "2m"), ("D", "15m"), ("E", None), ("F", "0s")]]}]}
    scaled = with_scaled_for(rules, per_minute=2, most=10)
    assert [r.get("for") for r in scaled["groups"][0]["rules"]] == ["1s", "2s", "4s", "10s", None, "0s"]
    assert rules["groups"][0]["rules"][0]["for"] == "30s"  # the original is left as it was


def test_the_deployed_scrape_configuration_is_pointed_at_the_test():
    deployed = yaml.safe_load((observability.PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = [job["job_name"] for job in deployed["scrape_configs"]]
    targets = {job: [f"127.0.0.1:{9000 + i}"] for i, job in enumerate(jobs)}
    config = scrape_config_for_test(deployed, targets=targets, rule_files=["/tmp/rules.yml"],
                                    alertmanager="127.0.0.1:9093", interval="2s", evaluation="1s")
    assert config["global"]["scrape_interval"] == config["global"]["scrape_timeout"] == "2s"
    assert config["global"]["evaluation_interval"] == "1s"
    assert config["rule_files"] == ["/tmp/rules.yml"]
    assert config["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]
    for original, job in zip(deployed["scrape_configs"], config["scrape_configs"], strict=True):
        assert job["static_configs"] == [{"targets": targets[job["job_name"]]}]
        assert not [key for key in job if key.endswith("_sd_configs")]
        assert job.get("metrics_path") == original.get("metrics_path")
    with pytest.raises(KeyError, match="no test targets"):
        scrape_config_for_test(deployed, targets=dict(list(targets.items())[1:]), rule_files=[],
                               alertmanager="127.0.0.1:9093", interval="1s")
    with pytest.raises(KeyError, match="has no scrape jobs"):
        scrape_config_for_test(deployed, targets={**targets, "certfleet-nothing": []}, rule_files=[],
                               alertmanager="127.0.0.1:9093", interval="1s")


def test_alertmanager_sends_every_alert_to_the_webhook():
    config = alertmanager_config("http://127.0.0.1:5000/alerts")
    [receiver] = config["receivers"]
    assert config["route"]["receiver"] == receiver["name"]
    assert receiver["webhook_configs"] == [{"url": "http://127.0.0.1:5000/alerts", "send_resolved": True}]
