"""What the live observability test reads from ``deploy/`` and hands to a real Prometheus and
Alertmanager, as pure functions of the files' contents.

- every query of every Grafana dashboard, with the dashboard's variables and Grafana's built-in
  intervals substituted as Grafana would before sending it (a datasource variable only picks the
  Prometheus, so it is left out);
- every alerting rule of every rule file, and a copy of the rule files whose ``for:`` durations are
  scaled down to seconds, so a test can watch rules fire that would take minutes in service;
- ``deploy/prometheus/prometheus.yml`` turned into a test configuration: the same jobs and metric
  paths, scraping the test's ports instead of the deployment's names;
- an Alertmanager configuration sending everything to one webhook.

The files are read generically (every dashboard, panel and target; every rule file), so dashboards
and rules added later are covered without changing the test.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.procs import ROOT

DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROMETHEUS_DIR = DEPLOY / "prometheus"

#: Grafana's built-in variables, as it would set them for a dashboard over the last few minutes of
#: a Prometheus scraping every second. $__rate_interval (5m) holds a whole test run, however slow the machine.
GRAFANA_BUILTINS = {
    "__rate_interval": "5m", "__interval": "15s", "__interval_ms": "15000",
    "__range": "5m", "__range_s": "300", "__range_ms": "300000",
}
#: What Grafana substitutes for a variable set to "All" without an ``allValue`` of its own, in a
#: regex matcher (=~): it matches whatever the label holds.
ALL = ".*"
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel: where it is, the expression as written and as sent."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str
    query: str

    def where(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}"


def dashboard_files(folder: Path = DASHBOARDS) -> list[Path]:
    return sorted(folder.glob("*.json"))


def panels(container: Mapping) -> Iterator[Mapping]:
    """Every panel of a dashboard, those inside rows (collapsed or not) included; rows themselves too."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def variable_values(dashboard: Mapping) -> dict[str, str]:
    """Each templating variable's value as the dashboard opens: its current value (several joined
    as a regex alternation, "All" as :data:`ALL`), else its first option, else its query."""
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource":
            continue
        current = (variable.get("current") or {}).get("value")
        if current in (None, "", []):
            options = variable.get("options") or []
            current = options[0]["value"] if options else variable.get("query", "")
        if isinstance(current, list):
            current = current[0] if len(current) == 1 else "(" + "|".join(current) + ")"
        if current == "$__all":
            current = variable.get("allValue") or ALL
        values[variable["name"]] = str(current)
    return values


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]`` replaced by
    ``values`` or Grafana's built-ins; KeyError naming any other variable."""
    known = {**GRAFANA_BUILTINS, **values}

    def value(match: re.Match) -> str:
        name = next(group for group in match.groups() if group)
        if name not in known:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return known[name]

    return _VARIABLE.sub(value, expr)


def dashboard_queries(paths: list[Path] | None = None) -> list[PanelQuery]:
    """Every Prometheus expression of every panel of every dashboard (hidden targets left out:
    Grafana draws nothing for them)."""
    found = []
    for path in dashboard_files() if paths is None else paths:
        dashboard = json.loads(path.read_text())
        values = variable_values(dashboard)
        title = dashboard.get("title") or path.stem
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if not expr or target.get("hide"):
                    continue
                found.append(PanelQuery(title, panel.get("title") or f"panel {panel.get('id')}",
                                        target.get("refId", "?"), expr, substitute(expr, values)))
    return found


# --- rules ---------------------------------------------------------------------------------------

def rule_files(folder: Path = PROMETHEUS_DIR) -> list[Path]:
    """The rule files among ``folder``'s YAML files: those with rule groups (not the scrape
    configuration, nor promtool's test files, which list ``tests``)."""
    found = []
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        document = yaml.safe_load(path.read_text())
        if isinstance(document, dict) and "groups" in document and "tests" not in document:
            found.append(path)
    return found


def alert_rules(paths: list[Path] | None = None) -> list[dict]:
    """Every alerting rule (not recording rule) of the rule files."""
    return [rule for path in (rule_files() if paths is None else paths)
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group.get("rules", []) if "alert" in rule]


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(text: str) -> float:
    """A Prometheus duration ("90s", "1h30m") in seconds; ValueError for anything else."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def with_scaled_for(document: Mapping, *, per_minute: float, most: float) -> dict:
    """A copy of a rule file whose ``for:`` durations pass ``per_minute`` seconds for each minute of
    the original, at most ``most`` seconds and at least one (a rule without ``for:`` still fires
    at once). The rules keep their order of patience: one that waits longer in service waits
    longer here, up to ``most``."""
    scaled = copy.deepcopy(dict(document))
    for group in scaled.get("groups", []):
        for rule in group.get("rules", []):
            if "for" in rule:
                seconds = duration_seconds(str(rule["for"])) / 60 * per_minute
                rule["for"] = f"{max(1, min(most, round(seconds)))}s" if seconds else "0s"
    return scaled


# --- Prometheus and Alertmanager configuration ---------------------------------------------------

_DISCOVERY = re.compile(r".*_sd_configs$|^static_configs$")


def scrape_config_for_test(deployed: Mapping, *, targets: Mapping[str, list[str]], rule_files: list[str],
                           alertmanager: str, interval: str, evaluation: str | None = None) -> dict:
    """``deployed`` (prometheus.yml) with every job scraping ``targets[job_name]`` (host:port) instead
    of what it discovers, every ``interval`` (its timeout as long), the given rule files evaluated
    every ``evaluation`` (default: ``interval``), and alerts sent to ``alertmanager`` (host:port).
    Jobs keep their names, metric paths, schemes and relabelling. KeyError for a job the test has
    no targets for, or targets for a job the file lacks."""
    config = copy.deepcopy(dict(deployed))
    config["global"] = {**config.get("global", {}), "scrape_interval": interval, "scrape_timeout": interval,
                        "evaluation_interval": evaluation or interval}
    config["rule_files"] = list(rule_files)
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    if missing := jobs - set(targets):
        raise KeyError(f"no test targets for the scrape jobs {sorted(missing)}")
    if extra := set(targets) - jobs:
        raise KeyError(f"prometheus.yml has no scrape jobs {sorted(extra)}")
    for job in config["scrape_configs"]:
        for key in [k for k in job if _DISCOVERY.match(k)]:
            del job[key]
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)
        job["static_configs"] = [{"targets": list(targets[job["job_name"]])}]
    return config


def alertmanager_config(webhook_url: str) -> dict:
    """Every alert to one webhook, a notification per alert name, as soon as Alertmanager may."""
    return {
        "route": {"receiver": "test-webhook", "group_by": ["alertname"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "test-webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }
