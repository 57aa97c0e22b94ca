"""The deploy/ files parse, and agree with the code: metric names, labels and label values the alerts
and every dashboard query exist, settings are real CERTFLEET_* variables, container commands are
accepted by the certfleet CLI, and the pieces refer to each other by the right names.
Docker is not available here, so nothing is started. (promtool runs the alert rules' own tests:
test_alert_rules.py; the dashboards' generator: test_dashboards.py.)"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

import shared.metrics as metrics
from services.controller.scheduling.schedules import default_schedules
from services.worker.ca_waiting import EXCHANGE_OUTCOMES
from shared.enums import AlertCode
from shared.settings import PREFIX, Settings
from shared.states import Status

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def k8s_objects() -> list[dict]:
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def pod_containers(pod: dict) -> list[dict]:
    """A pod's init containers, then its containers."""
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def k8s(kind: str, name: str) -> dict:
    [obj] = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


COMPOSE = load_yaml(DEPLOY / "compose.yaml")
SERVICES = COMPOSE["services"]
ALERTS = load_yaml(DEPLOY / "prometheus" / "alerts.yml")
RULES = [rule for group in ALERTS["groups"] for rule in group["rules"]]
PROMETHEUS = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
DASHBOARDS = {path.name: json.loads(path.read_text())
              for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))}
DASHBOARD = DASHBOARDS["certfleet-fleet.json"]


def panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def expressions(board: dict) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p["targets"]]


PANELS = [p for board in DASHBOARDS.values() for p in panels(board)]
DASHBOARD_EXPRS = [expr for board in DASHBOARDS.values() for expr in expressions(board)]


# --- what the code exposes ---------------------------------------------------------------------

def certfleet_series() -> dict[str, set[str]]:
    """Every series name certfleet exposes, with its label names."""
    series: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            series[value._name + "_total"] = set(value._labelnames)
        elif isinstance(value, Histogram):
            series[value._name + "_bucket"] = set(value._labelnames) | {"le"}
            series[value._name + "_sum"] = series[value._name + "_count"] = set(value._labelnames)
        elif isinstance(value, Gauge):
            series[value._name] = set(value._labelnames)
    # The gauges the controller renders at scrape time: from a database snapshot holding every optional
    # figure, and from the CA gate's circuits.
    expiring = {days: 1 for days in metrics.EXPIRY_WINDOWS_DAYS}
    snapshot = metrics.FleetSnapshot({("available", "available"): 3}, expiring, 1, 1.9e9, ca_bundle_version="1",
                                     ca_bundle_sha256="ab" * 32, ca_bundle_last_modified=1.8e9,
                                     schedule_last_runs={"renewal": 1.8e9})
    families = [*metrics.FleetCollector(lambda: snapshot).collect(),
                *metrics.CaCircuitCollector(lambda: {"https://ca.example.net:443": False}).collect()]
    for family in families:
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def dramatiq_series() -> dict[str, set[str]]:
    """Dramatiq's Prometheus middleware metrics, read from its source (importing it would
    create its multiprocess directory)."""
    import dramatiq

    source = (Path(dramatiq.__file__).parent / "middleware" / "prometheus.py").read_text()
    series: dict[str, set[str]] = {}
    for name in set(re.findall(r'"(dramatiq_[a-z_]+)"', source)):
        for suffix in ("", "_bucket", "_sum", "_count"):
            series[name + suffix] = {"queue_name", "actor_name", "le"}
    return series


KNOWN = certfleet_series() | dramatiq_series() | {"up": set()}
SCHEDULES = {spec.name for spec in default_schedules(Settings())}
ALWAYS_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series

PROMQL_FUNCTIONS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "absent",
    "clamp_min", "clamp_max", "topk", "bottomk", "time", "vector", "scalar", "delta", "deriv",
}
#: The values each metric's outcome label takes, as the code sets them.
OUTCOMES = {
    "certfleet_enrollments_total": {"succeeded", "failed", "pending"},
    "certfleet_jobs_total": {"succeeded", "failed"},
    "certfleet_renewals_total": {"succeeded", "failed"},
    "certfleet_alert_deliveries_total": {"delivered", "failed", "dead"},
    "certfleet_revocation_checks_total": {"good", "revoked", "unknown"},
    "certfleet_ca_bundle_updates_total": {"updated", "up_to_date", "forced", "failed_checks", "invalid",
                                          "unreachable", "checks_passed", "checks_failed"},
    "certfleet_ca_bundle_connection_checks_total": {"passed", "failed"},
    "certfleet_ca_exchanges_total": set(EXCHANGE_OUTCOMES.values()),
    "certfleet_scheduler_runs_total": {"succeeded", "failed", "interrupted"},
}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                "group_right", "inf", "nan"}


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric, {label: value}) for every selector with label matchers."""
    found = []
    for metric, body in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", expr):
        matchers = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"([^"]*)"', body))
        found.append((metric, matchers))
    return found


def metric_names(expr: str) -> set[str]:
    text = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors, $__rate_interval
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call:
            assert word in PROMQL_FUNCTIONS, f"unknown PromQL function {word!r} in {expr!r}"
        elif word not in PROMQL_WORDS:
            names.add(word)
    return names


def check_expression(expr: str) -> None:
    names = metric_names(expr)
    assert names, f"no metric in {expr!r}"
    unknown = names - KNOWN.keys()
    assert not unknown, f"{expr!r} uses metrics nobody exposes: {sorted(unknown)}"
    for metric, matchers in selectors(expr):
        labels = KNOWN[metric] | ALWAYS_LABELS
        assert set(matchers) <= labels, f"{metric} has no label {sorted(set(matchers) - labels)} ({expr!r})"
        if "within_days" in matchers and "$" not in matchers["within_days"]:
            assert int(matchers["within_days"]) in metrics.EXPIRY_WINDOWS_DAYS, expr
        for label in ("ca_status", "identity_status"):
            if label in matchers:
                assert matchers[label] in {s.value for s in Status}, expr
        if "outcome" in matchers:
            assert set(matchers["outcome"].split("|")) <= OUTCOMES[metric], f"{metric}: no such outcome ({expr!r})"
        if "kind" in matchers:
            assert matchers["kind"] in metrics.JOB_KINDS, expr
        if "state" in matchers:
            assert matchers["state"] in metrics.UNFINISHED_STATES, expr
        if "code" in matchers and "F0853" not in expr and not matchers["code"].startswith("ca_"):
            assert matchers["code"] in {c.value for c in AlertCode}, expr
        if "schedule" in matchers:
            assert set(matchers["schedule"].split("|")) <= SCHEDULES, expr
        if "version" in matchers:
            assert matchers["version"] in {"current", "older"}, expr


def test_the_promql_checker_catches_mistakes():
    with pytest.raises(AssertionError, match="nobody exposes"):
        check_expression("certfleet_enrollments > 0")  # a counter without its _total suffix
    with pytest.raises(AssertionError, match="has no label"):
        check_expression('certfleet_trustpoints{status="failed"} > 0')
    with pytest.raises(AssertionError):
        check_expression('certfleet_certificates_expiring{within_days="45"} > 0')
    with pytest.raises(AssertionError, match="no such outcome"):
        check_expression('sum(rate(certfleet_alert_deliveries_total{outcome=~"delivered|lost"}[5m]))')
    with pytest.raises(AssertionError):
        check_expression('time() - max(certfleet_scheduler_last_run_timestamp_seconds{schedule="renewals"})')
    check_expression('sum by (le) (rate(dramatiq_message_duration_milliseconds_bucket[$__rate_interval]))')


# --- Prometheus ---------------------------------------------------------------------------------

def test_alert_rules_are_well_formed():
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in RULES:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r["alert"])
def test_alert_expressions_use_real_metrics(rule):
    check_expression(rule["expr"])


@pytest.mark.parametrize(
    "needle",
    [
        'certfleet_certificates_expiring{within_days="30"}',
        'certfleet_certificates_expiring{within_days="7"}',
        "certfleet_certificates_expired",
        'certfleet_trustpoints{identity_status="failed"}',
        'certfleet_enrollments_total{outcome="failed"}',
        "certfleet_reconciler_republished_total",
        'up{job="certfleet-worker"}',
        'certfleet_alerts_active{code="F0853"}',
        "certfleet_jobs_oldest_queued_age_seconds",
        "certfleet_trustpoints_renewal_failed",
        'certfleet_scheduler_last_run_timestamp_seconds{schedule="renewal"}',
        'certfleet_alerts_active{code="CF-BUNDLE-FAILED"}',
        'certfleet_devices_ca_bundle{version="older"}',
        "certfleet_certificates_revoked",
        'certfleet_revocation_checks_total{outcome="unknown"}',
        'certfleet_alert_deliveries_total{channel="webhook",outcome="failed"}',
        'certfleet_alert_deliveries_total{outcome="dead"}',
        'certfleet_alert_deliveries_total{channel="stream",outcome="failed"}',
        "certfleet_ca_circuit_open",
    ],
)
def test_every_promised_alert_exists(needle):
    assert any(needle in rule["expr"] for rule in RULES), f"no alert on {needle}"


def test_scrape_jobs_match_the_alerts_and_the_compose_services():
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    for rule in RULES:
        for _, matchers in selectors(rule["expr"]):
            if "job" in matchers:
                assert matchers["job"] in jobs, rule["alert"]
    [controller_target] = jobs["certfleet-controller"]["static_configs"][0]["targets"]
    assert controller_target == "controller:8000"
    assert "controller" in SERVICES and "--port" in SERVICES["controller"]["command"]
    assert SERVICES["controller"]["command"][SERVICES["controller"]["command"].index("--port") + 1] == "8000"
    [worker_sd] = jobs["certfleet-worker"]["dns_sd_configs"]
    assert worker_sd["names"] == ["worker"] and worker_sd["port"] == 9191
    assert SERVICES["worker"]["environment"]["CERTFLEET_WORKER_METRICS_PORT"] == "9191"
    assert SERVICES["worker"]["environment"]["CERTFLEET_WORKER_METRICS_HOST"] == "0.0.0.0"
    # Relative to the configuration: beside it in compose, and here (promtool check config reads both).
    assert PROMETHEUS["rule_files"] == ["alerts.yml"]
    mounts = dict(v.split(":")[:2] for v in SERVICES["prometheus"]["volumes"])
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"


def test_prometheus_sends_its_alerts_to_the_compose_alertmanager():
    [alertmanagers] = PROMETHEUS["alerting"]["alertmanagers"]
    [target] = alertmanagers["static_configs"][0]["targets"]
    host, port = target.split(":")
    alertmanager = SERVICES[host]
    command = alertmanager["command"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in command
    mounts = dict(v.split(":")[:2] for v in alertmanager["volumes"])
    assert mounts["./alertmanager/alertmanager.yml"] == "/etc/alertmanager/alertmanager.yml"
    assert (DEPLOY / "alertmanager" / "alertmanager.yml").exists()
    assert f"{port}:{port}" in alertmanager["ports"] and port == "9093"
    assert host in SERVICES["prometheus"]["depends_on"]


# --- Grafana ------------------------------------------------------------------------------------

#: What each dashboard must show (a part of an expression of one of its panels).
PROMISED_PANELS = {
    "certfleet-fleet.json": [
        "certfleet_trustpoints", "certfleet_enrollments_total", "certfleet_enrollment_failures_total",
        "histogram_quantile(0.5, sum by (le, method) (rate(certfleet_enrollment_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, method) (rate(certfleet_enrollment_duration_seconds_bucket",
        "certfleet_certificates_expiring", "certfleet_job_retries_total", "dramatiq_messages_total",
        "certfleet_jobs_unfinished", "certfleet_jobs_oldest_queued_age_seconds",
    ],
    "certfleet-renewal.json": [
        "certfleet_certificates_renewal_due", "certfleet_renewals_in_progress", "certfleet_renewals_total",
        "certfleet_trustpoints_renewal_failed", 'certfleet_scheduler_last_run_timestamp_seconds{schedule="renewal"}',
    ],
    "certfleet-ca-bundle.json": [
        'certfleet_devices_ca_bundle{version="current"}', "certfleet_ca_bundle_version_info",
        "certfleet_ca_bundle_last_modified_timestamp_seconds", "certfleet_ca_bundle_updates_total",
        "certfleet_ca_bundle_connection_checks_total",
    ],
    "certfleet-revocation.json": ["certfleet_certificates_revoked", "certfleet_revocation_checks_total"],
    "certfleet-health-alerts.json": [
        "max by (code, severity) (certfleet_alerts_active)", "certfleet_alert_deliveries_total",
        'certfleet_alerts_active{code="F0853"}',
    ],
    "certfleet-ca-endpoints.json": [
        "certfleet_ca_circuit_open", "certfleet_ca_gate_waits_total", "certfleet_ca_exchanges_total",
    ],
}


def test_there_is_a_dashboard_for_every_part_of_the_lifecycle():
    assert set(DASHBOARDS) == set(PROMISED_PANELS)
    assert DASHBOARD["title"] == "certfleet fleet"
    titles = [board["title"] for board in DASHBOARDS.values()]
    uids = [board["uid"] for board in DASHBOARDS.values()]
    assert len(set(titles)) == len(titles) and len(set(uids)) == len(uids)


def test_dashboard_queries_use_real_metrics():
    for name, board in DASHBOARDS.items():
        assert expressions(board), name
        for expr in expressions(board):
            check_expression(expr)


@pytest.mark.parametrize(("dashboard", "needle"),
                         [(name, needle) for name, needles in PROMISED_PANELS.items() for needle in needles])
def test_dashboard_has_the_promised_panels(dashboard, needle):
    assert any(needle in expr for expr in expressions(DASHBOARDS[dashboard])), needle


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboards_query_the_prometheus_chosen_in_their_datasource_variable(name):
    """No datasource uid is written anywhere: every panel and query names ${datasource}, a variable
    of type prometheus, so the dashboards work with whatever Prometheus Grafana has."""
    board = DASHBOARDS[name]
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels(board):
        assert panel["datasource"] == ref, panel["title"]
        assert panel["targets"] and all(t["datasource"] == ref for t in panel["targets"]), panel["title"]
    text = json.dumps(board)
    uids = set(re.findall(r'"uid": "([^"]*)"', text)) - {board["uid"]}
    assert uids == {"${datasource}"}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_layout(name):
    board = DASHBOARDS[name]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and 0 not in ids
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
    for panel in panels(board):
        refs = [t["refId"] for t in panel["targets"]]
        assert all(refs) and len(set(refs)) == len(refs), panel["title"]
    # No two panels overlap.
    cells = [(x, y) for p in board["panels"] for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]
    assert len(cells) == len(set(cells))


def test_the_expiry_variable_offers_exactly_the_windows_the_controller_exports():
    [days] = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "days"]
    assert [int(o["value"]) for o in days["options"]] == list(metrics.EXPIRY_WINDOWS_DAYS)
    assert [int(d) for d in days["query"].split(",")] == list(metrics.EXPIRY_WINDOWS_DAYS)


def test_grafana_provisions_the_prometheus_of_compose_and_every_dashboard():
    datasources = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    [datasource] = datasources["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in SERVICES
    providers = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "certfleet.yml")
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    # The provider reads every JSON file of the folder compose mounts the dashboards directory at.
    mounts = dict(v.split(":")[:2] for v in SERVICES["grafana"]["volumes"])  # source:target[:mode]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert not [p for p in (DEPLOY / "grafana" / "dashboards").iterdir() if p.is_dir()], "the provider reads one level"


# --- compose ------------------------------------------------------------------------------------

def test_compose_has_every_service():
    expected = {"redis", "postgres", "db-upgrade", "controller", "worker", "device-sim", "prometheus", "alertmanager",
                "grafana"}
    assert expected <= set(SERVICES)


def test_postgres_keeps_its_data_in_a_named_volume():
    [volume] = [v for v in SERVICES["postgres"]["volumes"] if v.endswith(":/var/lib/postgresql/data")]
    name = volume.split(":")[0]
    assert not name.startswith((".", "/")), "a named volume, not a bind mount"
    assert name in COMPOSE["volumes"]


def test_workers_can_be_scaled():
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker  # both would clash between replicas
    assert worker["deploy"]["replicas"] >= 1


def test_the_image_is_built_from_deploy_dockerfile():
    for name in ("db-upgrade", "controller", "worker", "device-sim"):
        build = SERVICES[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip install ." in dockerfile
    assert 'ENTRYPOINT ["certfleet"]' in dockerfile
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (ROOT / source).exists(), source


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_certfleet_variables_are_real_settings():
    known = {PREFIX + f.name.upper() for f in fields(Settings)}
    seen = set()
    for name, service in SERVICES.items():
        for variable in environment_of(service):
            if variable.startswith(PREFIX):
                assert variable in known, f"{name}: {variable} is not a certfleet setting"
                seen.add(variable)
    for obj in k8s_objects():
        data = obj.get("data") or obj.get("stringData") or {}
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        env = [e["name"] for c in pod_containers(pod) for e in c.get("env", [])]
        for variable in [*data, *env]:
            assert variable in known, f"{obj['kind']} {obj['metadata']['name']}: {variable} is not a setting"
    assert {"CERTFLEET_DATABASE_URL", "CERTFLEET_BROKER_URL", "CERTFLEET_SECRET_KEY"} <= seen


def test_compose_commits_no_real_secret():
    env = environment_of(SERVICES["controller"])
    # The secret key must come from the operator's environment; compose refuses to start without it.
    assert re.fullmatch(r"\$\{CERTFLEET_SECRET_KEY:\?[^}]+\}", env["CERTFLEET_SECRET_KEY"])
    assert "${POSTGRES_PASSWORD:-certfleet-dev-password}" in env["CERTFLEET_DATABASE_URL"]


# --- Kubernetes ---------------------------------------------------------------------------------

def test_kustomization_lists_every_manifest():
    kustomization = load_yaml(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_secret_key_is_a_secret_and_config_holds_no_secret():
    [generated] = load_yaml(K8S / "kustomization.yaml")["secretGenerator"]
    assert generated["name"] == "certfleet-secrets"
    config = k8s("ConfigMap", "certfleet-config")["data"]
    assert not [k for k in config if re.search(r"SECRET|PASSWORD|DATABASE_URL", k)]
    for name in ("certfleet-controller", "certfleet-worker"):
        for container in pod_containers(k8s("Deployment", name)["spec"]["template"]["spec"]):
            refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert refs == {"certfleet-config", "certfleet-secrets"}, f"{name} {container['name']}"


def test_the_manifests_ship_no_secret_key():
    """A key in the repository protects nothing: the Secret comes from a file make-secrets.sh writes
    with a random key, which git ignores, and no manifest holds a key of its own."""
    assert not [o for o in k8s_objects() if o["kind"] == "Secret"]
    for path in K8S.iterdir():
        if path.suffix in (".yaml", ".yml"):
            assert not re.search(r"^\s*CERTFLEET_SECRET_KEY\s*[:=]", path.read_text(), re.MULTILINE), path.name
    [generated] = load_yaml(K8S / "kustomization.yaml")["secretGenerator"]
    assert generated["envs"] == ["certfleet-secrets.env"]
    assert "certfleet-secrets.env" in (K8S / ".gitignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files", str(K8S)], cwd=ROOT, capture_output=True, text=True).stdout
    assert "certfleet-secrets.env" not in tracked


def make_secrets(directory: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(directory / "make-secrets.sh")], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_make_secrets_writes_a_random_key_once(tmp_path):
    directory = tmp_path / "kubernetes"
    shutil.copytree(K8S, directory)
    assert make_secrets(directory).returncode == 2  # no database URL: nothing written
    assert not (directory / "certfleet-secrets.env").exists()

    url = "postgresql://certfleet:pw@postgres:5432/certfleet"
    assert make_secrets(directory, CERTFLEET_DATABASE_URL=url).returncode == 0
    written = directory / "certfleet-secrets.env"
    values = dict(line.split("=", 1) for line in written.read_text().splitlines())
    assert values["CERTFLEET_DATABASE_URL"] == url
    assert len(values["CERTFLEET_SECRET_KEY"]) >= 40
    assert written.stat().st_mode & 0o077 == 0

    again = make_secrets(directory, CERTFLEET_DATABASE_URL=url)  # would lose the key of stored secrets
    assert again.returncode == 1 and "exists" in again.stderr
    assert dict(line.split("=", 1) for line in written.read_text().splitlines()) == values


def test_worker_deployment_is_autoscaler_friendly():
    worker = k8s("Deployment", "certfleet-worker")
    assert "replicas" not in worker["spec"], "the HPA owns the replica count"
    [container] = worker["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    hpa = k8s("HorizontalPodAutoscaler", "certfleet-worker")
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "certfleet-worker"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_services_select_their_pods():
    services = [o for o in k8s_objects() if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} >= {"certfleet-controller", "certfleet-device-sim"}
    for service in services:
        selector = service["spec"]["selector"]
        matching = [d for d in k8s_objects() if d["kind"] == "Deployment"
                    and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert matching, f"Service {service['metadata']['name']} selects no pod"
        [container] = matching[0]["spec"]["template"]["spec"]["containers"]
        port_names = {p["name"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_only_once_the_secrets_are_made(tmp_path):
    directory = tmp_path / "kubernetes"
    shutil.copytree(K8S, directory)
    (directory / "certfleet-secrets.env").unlink(missing_ok=True)
    refused = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "certfleet-secrets.env" in refused.stderr

    assert make_secrets(directory, CERTFLEET_DATABASE_URL="postgresql://u:p@db:5432/certfleet").returncode == 0
    done = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    objects = list(yaml.safe_load_all(done.stdout))
    kinds = sorted(doc["kind"] for doc in objects)
    assert kinds.count("Deployment") == 3 and "HorizontalPodAutoscaler" in kinds
    [secret] = [doc for doc in objects if doc["kind"] == "Secret"]
    assert secret["metadata"]["name"].startswith("certfleet-secrets")
    assert set(secret["data"]) == {"CERTFLEET_SECRET_KEY", "CERTFLEET_DATABASE_URL"}
    # The pods use the generated Secret under its generated name.
    services = [doc for doc in objects if doc["kind"] == "Deployment"
                and doc["metadata"]["name"] in ("certfleet-controller", "certfleet-worker")]
    assert len(services) == 2
    for deployment in services:
        for container in pod_containers(deployment["spec"]["template"]["spec"]):
            refs = {ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref}
            assert refs == {secret["metadata"]["name"]}, deployment["metadata"]["name"]


# --- the commands containers run ----------------------------------------------------------------

def container_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for name, service in SERVICES.items():
        command = service.get("command")
        if not command or service.get("image", "").split(":")[0] != "certfleet":
            continue
        if service.get("entrypoint") == ["sh", "-c"]:
            for fragment in re.findall(r"certfleet ([^|&\"]+)", command[0]):
                commands.append((f"compose {name}", shlex.split(fragment)))
        else:
            commands.append((f"compose {name}", command))
    for obj in k8s_objects():
        if obj["kind"] == "Deployment":
            for container in pod_containers(obj["spec"]["template"]["spec"]):
                commands.append((f"kubernetes {obj['metadata']['name']} {container['name']}", container["args"]))
    return commands


def test_container_commands_are_accepted_by_the_certfleet_cli():
    from services.cli.main import build_parser

    parser = build_parser()
    commands = container_commands()
    assert len(commands) >= 7
    for where, args in commands:
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: certfleet refuses {' '.join(args)!r}")


# --- the schema is upgraded before the services start -------------------------------------------

def runs_db_upgrade(args: list[str]) -> bool:
    """Whether the certfleet CLI runs ``args`` as ``certfleet db upgrade``."""
    from services.cli import db
    from services.cli.main import build_parser

    parsed = build_parser().parse_args(args)
    return parsed.func is db.main and parsed.db_command == "upgrade"


def test_the_checker_tells_db_upgrade_from_other_commands():
    assert runs_db_upgrade(["db", "upgrade"])
    assert not runs_db_upgrade(["controller", "--host", "0.0.0.0"])


def test_compose_upgrades_the_schema_once_before_the_controller_and_workers_start():
    [upgrade] = [name for name, service in SERVICES.items()
                 if service.get("image", "").startswith("certfleet") and "entrypoint" not in service
                 and service.get("command") and runs_db_upgrade(service["command"])]
    service = SERVICES[upgrade]
    # A one-shot: restarting it after it succeeded would keep it from ever "completing".
    assert service["restart"] == "no"
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert environment_of(service)["CERTFLEET_DATABASE_URL"] == environment_of(SERVICES["controller"])[
        "CERTFLEET_DATABASE_URL"]
    for name in ("controller", "worker"):
        assert SERVICES[name]["depends_on"][upgrade] == {"condition": "service_completed_successfully"}, name
        assert SERVICES[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name


@pytest.mark.parametrize("name", ["certfleet-controller", "certfleet-worker"])
def test_kubernetes_pods_upgrade_the_schema_before_their_service_starts(name):
    pod = k8s("Deployment", name)["spec"]["template"]["spec"]
    [service] = pod["containers"]
    upgrades = [c for c in pod.get("initContainers", []) if runs_db_upgrade(c["args"])]
    assert len(upgrades) == 1, f"{name}: no init container runs certfleet db upgrade"
    [upgrade] = upgrades
    assert upgrade["image"] == service["image"]  # the schema of the version about to run
    assert upgrade["envFrom"] == service["envFrom"]  # the same database
    assert upgrade["securityContext"] == service["securityContext"]


# --- the README says what each alert and dashboard is -------------------------------------------

def test_the_readme_names_every_alert_and_dashboard():
    readme = (ROOT / "README.md").read_text()
    observability = readme[readme.index("## Observability"):readme.index("## Tests and benchmarks")]
    for rule in RULES:
        assert rule["alert"] in observability, rule["alert"]
    for board in DASHBOARDS.values():
        assert f"| {board['title']} |" in observability, board["title"]
