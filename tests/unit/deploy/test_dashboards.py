"""The Grafana dashboards are what deploy/grafana/generate.py makes of them (grafana-foundation-sdk):
the committed JSON and the generator's output are the same, file for file, and the generator's own
check catches a file edited by hand, one it no longer makes, and one missing. Every panel's
expression is PromQL that promtool parses. (Their metrics and labels: test_deploy.py.)"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

import shared.metrics as metrics
from tests.support.ca_peers import tool

ROOT = Path(__file__).resolve().parents[3]
GENERATOR = ROOT / "deploy" / "grafana" / "generate.py"
COMMITTED = ROOT / "deploy" / "grafana" / "dashboards"


def load_generator():
    spec = importlib.util.spec_from_file_location("certfleet_dashboards", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_dashboards_are_what_the_generator_makes():
    made = load_generator().render()
    committed = {path.name: path.read_text() for path in COMMITTED.glob("*.json")}
    assert set(committed) == set(made), "run make dashboards"
    for name, text in made.items():
        assert committed[name] == text, f"{name} differs from what the generator makes: run make dashboards"


def test_the_generator_offers_the_expiry_windows_the_controller_exports():
    assert load_generator().EXPIRY_WINDOWS_DAYS == metrics.EXPIRY_WINDOWS_DAYS


def check(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GENERATOR), "--check", "--out", str(out)], capture_output=True,
                          text=True, timeout=60)


def test_the_generators_check_fails_on_a_hand_edit_a_stray_and_a_missing_file(tmp_path):
    out = tmp_path / "dashboards"
    shutil.copytree(COMMITTED, out)
    assert check(out).returncode == 0

    edited = out / "certfleet-renewal.json"
    edited.write_text(edited.read_text().replace('"certfleet renewal"', '"my renewal"'))
    (out / "certfleet-old.json").write_text("{}")
    (out / "certfleet-revocation.json").unlink()
    refused = check(out)
    assert refused.returncode == 1
    assert "certfleet-renewal.json: differs" in refused.stdout
    assert "certfleet-revocation.json: differs" in refused.stdout
    assert "certfleet-old.json: made by nothing" in refused.stdout

    # Writing them puts back what was made; the stray stays for a person to remove.
    written = subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)], capture_output=True, text=True,
                             timeout=60)
    assert written.returncode == 0, written.stderr
    assert edited.read_text() == (COMMITTED / "certfleet-renewal.json").read_text()
    assert check(out).returncode == 1
    (out / "certfleet-old.json").unlink()
    assert check(out).returncode == 0


#: What Grafana puts in place of its variables before Prometheus sees an expression.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$days": "30"}


def test_every_panel_expression_is_promql_prometheus_parses(tmp_path):
    """Each panel's expression, its Grafana variables filled in, as a recording rule promtool checks."""
    rules = []
    for path in sorted(COMMITTED.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                assert "$" not in expr, f"{path.name} {panel['title']}: a variable Prometheus would not know: {expr}"
                rules.append({"record": f"panel:{path.stem.replace('-', '_')}:{len(rules)}", "expr": expr})
    assert len(rules) > 60
    file = tmp_path / "panels.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    checked = subprocess.run([tool("promtool", "apt-get install prometheus"), "check", "rules", str(file)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout
