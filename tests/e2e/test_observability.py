"""Dashboards and alerts against a real Prometheus and Alertmanager (Debian's, see ``make peers``),
on the multi-process stack (PostgreSQL, Redis; the controller with its scheduler, two worker
processes, the device simulator, ``certfleet ca serve`` as EST server and CA-bundle source).

Prometheus runs ``deploy/prometheus/prometheus.yml`` with its targets pointed at the test's ports,
scraping every 2 seconds and evaluating every second, with every rule file of ``deploy/prometheus``; Alertmanager
sends every alert to a webhook receiver in the test. A fleet of 40 devices (P-256 keys) goes
through what operators watch: enrollment (self-signed; EST at a CA rate limit the batch meets),
failures (a wrong EST password, a CA that is down), transient device errors that are retried,
renewal of certificates living 20 seconds, certificates expiring within 7 days, a CA bundle
installed and pushed, a revocation scan, devices whose default keyring has expired (F0853 from
the health check, sent to a certfleet webhook too) and messages no worker can process. Then,
through Prometheus's HTTP API:

- every scrape target is up;
- every expression of every panel of every dashboard in ``deploy/grafana/dashboards`` draws data
  (Prometheus evaluates it; the dashboard's variables as it opens);
- the alerts the run calls for fire and reach the webhook with their labels and annotations, and
  no other alert fires;
- every service's ``/metrics`` passes the hygiene checks of ``tests/support/metric_hygiene.py``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import httpx
import pytest
import redis
import yaml
from dramatiq.brokers.redis import RedisBroker

from services.cli.api_client import CertfleetClient
from shared.ca_circuits import GATE_PREFIX
from shared.domains import GLOBAL_DOMAIN_ID
from shared.enums import JobKind
from shared.events import ACTOR_FOR_KIND, JOBS_QUEUE
from tests.support import metric_hygiene, observability
from tests.support.pg import fresh_database, postgres_or_skip
from tests.support.procs import Proc, Stack, ca_ready_urls, free_port, wait_ready
from tests.support.prometheus_peers import (
    PrometheusApi,
    WebhookReceiver,
    alertmanager_binary,
    prometheus_binary,
    ready,
    reload_prometheus,
    start_alertmanager,
    start_prometheus,
    webhook_receiver,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

#: Every Redis database is some test module's own (see tests/conftest.py): like test_health_alerts,
#: this module shares database 0, with every key of its own under NAMESPACE, and never flushes it.
SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
NAMESPACE = "e2e-observability"
DEVICES = 40
#: Devices 1-16 enroll a self-signed certificate of 5 days, 17-32 one over EST that lives 20 s
#: (renewed in the last half of its life); 33-36 fail, their EST object has the wrong password;
#: 37-40 fail too, their EST object names a CA that is down (nothing listens at its port).
SELF_SIGNED, EST_GOOD, EST_BAD, EST_DOWN = slice(0, 16), slice(16, 32), slice(32, 36), slice(36, 40)
FAILED = 8  # trustpoints whose identity certificate failed: EST_BAD and EST_DOWN
USER, PASSWORD = "ftd-observed", "Observed-Est-Secret-47"
VALIDITY_SECONDS = 20
#: Enrollments the CA takes per second: the EST batch meets the limit, and jobs wait their turn.
CA_RATE_LIMIT = 8
EXPIRED_KEYRINGS = 0.2
#: Injected device errors (500 device_error): retried, so the retry series have data.
ERROR_RATE = 0.03
#: The rules wait two seconds here for each minute of their ``for:``, at most 10 (Prometheus
#: evaluates every second; the real durations, minutes, are checked at their edges by promtool's
#: rule tests). A rule that waits longer in service still waits longer here.
FOR_SECONDS_PER_MINUTE, FOR_AT_MOST = 2, 10
#: What the run calls for: these alerts fire, and no other. Renaming a rule means renaming it here.
EXPECTED_ALERTS = (
    "CertfleetDeviceKeyringExpired",  # F0853 on the devices whose default keyring expired
    "CertfleetTrustpointsFailed",  # a wrong EST password, a CA down
    "CertfleetCATrustpointsFailed",  # the CA down: its devices got no CA certificate either
    "CertfleetEnrollmentFailureRatioHigh",  # 8 of 40 enrollments failed, more than 5 %
    "CertfleetCertificatesExpiringIn7Days",  # every certificate installed lives 5 days at most
    "CertfleetCertificatesExpiringIn30Days",
    "CertfleetMessagesDeadLettered",  # messages no worker can process
    "CertfleetCACircuitOpen",  # the CA that is down
)
#: Dashboard expressions a healthy run cannot make draw, each with why (Prometheus still evaluates
#: each, so it must be valid PromQL). None today.
DRAW_NOTHING_WHEN_HEALTHY: dict[str, str] = {}
#: How long the checks wait for Prometheus to see what they look for, at most.
PATIENCE = 90


@dataclass
class Run:
    stack: Stack
    client: CertfleetClient
    prometheus: PrometheusApi
    receiver: WebhookReceiver
    procs: list[Proc]
    #: Each scrape job's targets (host:port), as the test's Prometheus was configured.
    targets: dict[str, list[str]]
    #: Devices whose default keyring has expired, as the simulator reports them.
    expired_keyrings: set[str]
    #: Every id, serial, name and address the fleet is known by.
    identifiers: set[str]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in self.procs + self.stack.procs)


def poll(check: Callable[[], list[str]], *, what: str, run: Run, timeout: float = PATIENCE) -> None:
    """Until ``check`` finds nothing wrong; then fails with what it still finds after ``timeout``."""
    deadline = time.monotonic() + timeout
    while problems := check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s:\n" + "\n".join(problems) + f"\n{run.logs()}")
        time.sleep(0.5)


def cleanup_redis(*ca_ports: int) -> None:
    """This module's keys: its namespace's, and the CA gate's for its CA endpoints."""
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    keys = [*client.scan_iter(f"{NAMESPACE}*")]
    keys += [key for port in ca_ports for key in client.scan_iter(f"{GATE_PREFIX}:*127.0.0.1:{port}*")]
    if keys:
        client.delete(*keys)
    client.close()


def scaled_rule_files(folder: Path) -> list[str]:
    """Every rule file of deploy/prometheus, copied into ``folder`` with its ``for:`` scaled down."""
    copies = []
    for path in observability.rule_files():
        copy = folder / f"rules-{path.name}"
        scaled = observability.with_scaled_for(yaml.safe_load(path.read_text()), per_minute=FOR_SECONDS_PER_MINUTE,
                                               most=FOR_AT_MOST)
        copy.write_text(yaml.safe_dump(scaled, sort_keys=False))
        copies.append(str(copy))
    return copies


def expired_serials(sim_url: str) -> set[str]:
    """The truth, from the devices themselves: whose default keyring is invalid (asked again when
    the simulator injects an error)."""
    with httpx.Client(base_url=sim_url, timeout=10) as http:

        def keyring(serial: str) -> dict:
            for _ in range(20):
                answer = http.get(f"/api/devices/{serial}/keyring/default")
                if answer.status_code == 200:
                    return answer.json()
            raise AssertionError(f"{serial}: {answer.status_code} {answer.text}")

        serials = [d["serial"] for d in http.get("/api/inventory", params={"limit": DEVICES}).json()["items"]]
        return {s for s in serials if not keyring(s)["valid"]}


def enroll(client: CertfleetClient, est_url: str, down_url: str) -> list[dict]:
    """The four bulk enrollments, started at once."""
    devices = sorted(client.devices(), key=lambda d: d["serial"])
    common = dict(key_type="ecdsa", key_size=256, organization="Example Corp")
    self_signed = client.create_enrollment_object(name="mgmt-self-signed", enrollment_type="self_signed",
                                                  validity_days=5, **common)
    est = dict(enrollment_type="est", username=USER, renew_before_fraction=0.5, ca_rate_limit=CA_RATE_LIMIT,
               **common)
    good = client.create_enrollment_object(name="vpn-est", enrollment_url=est_url, password=PASSWORD, **est)
    bad = client.create_enrollment_object(name="vpn-est-stale", enrollment_url=est_url, password="not-" + PASSWORD,
                                          **est)
    down = client.create_enrollment_object(name="vpn-est-gone", enrollment_url=down_url, password=PASSWORD, **est)
    return [client.start_bulk_enrollment(obj["id"], selection={"device_ids": [d["id"] for d in devices[part]]})
            for obj, part in ((self_signed, SELF_SIGNED), (good, EST_GOOD), (bad, EST_BAD), (down, EST_DOWN))]


def send_poison_message() -> None:
    """A message no worker can process: an actor called with arguments it does not take (as one from
    another certfleet version would be). Dramatiq fails it, retries it once (the message asks for
    one retry, soon) and dead-letters it."""
    broker = RedisBroker(url=SHARED_REDIS_URL, namespace=NAMESPACE, middleware=[])
    try:
        broker.enqueue(dramatiq.Message(queue_name=JOBS_QUEUE, actor_name=ACTOR_FOR_KIND[JobKind.ENROLL], args=(),
                                        kwargs={"from_another_version": True},
                                        options={"max_retries": 1, "min_backoff": 100}))
    finally:
        broker.close()


def dead_lettering_seen(api: PrometheusApi) -> bool:
    """Whether Prometheus sees dead letters increase: the first one too, since the workers export
    every actor's counters at 0 from their start."""
    return any(float(series["value"][1]) > 0
               for series in api.query("sum(increase(dramatiq_message_rejects_total[5m]))"))


def every_keyring_read(client: CertfleetClient, runs: list[float]) -> bool:
    """Whether the health check has read every device's default keyring; runs it again, 2 s after
    the last run, while some are unread (an injected device error leaves a device to the next run)."""
    if not [d for d in client.devices() if d["keyring"]["valid"] is None]:
        return True
    if time.monotonic() - runs[-1] > 2:
        client.run_schedule("device-health")
        runs.append(time.monotonic())
    return False


def scraped_every_target(api: PrometheusApi, targets: dict[str, list[str]]) -> bool:
    wanted = {(job, target) for job, found in targets.items() for target in found}
    return wanted <= {(t["labels"]["job"], t["labels"]["instance"]) for t in api.targets() if t["health"] == "up"}


def wait_until(condition: Callable[[], bool], *, what: str, run_logs: Callable[[], str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s\n{run_logs()}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Run]:
    """The stack, Prometheus and Alertmanager, and the fleet taken through its life: yielded once
    every trustpoint has settled, the EST certificates have renewed once, the health check and the
    revocation scan have run, the CA bundle is installed and messages were dead-lettered.
    Everything is stopped afterwards, whatever happened."""
    postgres_or_skip()
    prometheus_binary(), alertmanager_binary()  # skips (fails under CI) when they are missing
    tmp = tmp_path_factory.mktemp("observability")
    ca_dir = tmp / "ca"
    procs: list[Proc] = []
    with ExitStack() as cleanup:
        cleanup.callback(lambda: [p.stop() for p in procs])
        est_port, bundle_port, down_port = free_port(), free_port(), free_port()
        cleanup.callback(cleanup_redis, est_port, down_port)
        ca = Proc("ca", ["ca", "serve", "--state-dir", str(ca_dir), "--host", "127.0.0.1", "--est-port", str(est_port),
                         "--est-user", USER, "--bundle-port", str(bundle_port), "--http-port", "0",
                         "--validity-seconds", str(VALIDITY_SECONDS)],
                  {**os.environ, "CERTFLEET_CA_EST_PASSWORD": PASSWORD, "CERTFLEET_LOG_LEVEL": "WARNING"}, tmp)
        procs.append(ca)
        receiver = cleanup.enter_context(webhook_receiver())
        certfleet_receiver = cleanup.enter_context(webhook_receiver())
        alertmanager, alertmanager_url = start_alertmanager(observability.alertmanager_config(receiver.url), tmp)
        procs.append(alertmanager)
        database_url = cleanup.enter_context(fresh_database())
        # The CA that is down is probed for 6 s before its jobs give up: its failed exchanges go on
        # over several scrapes, as an outage does, and the CA panels' rates see them.
        env = {
            "CERTFLEET_BROKER_NAMESPACE": NAMESPACE, "CERTFLEET_ALERT_STREAM_KEY": f"{NAMESPACE}:alerts",
            "CERTFLEET_RENEWAL_INTERVAL_SECONDS": "1", "CERTFLEET_RENEWAL_SPREAD": "0.2",
            "CERTFLEET_SCHEDULER_TICK_SECONDS": "0.5", "CERTFLEET_ALERT_CONDITIONS_SECONDS": "1",
            "CERTFLEET_HEALTH_CHECK_SECONDS": "3600", "CERTFLEET_REVOCATION_SCAN_SECONDS": "3600",
            "CERTFLEET_RETRY_BACKOFF_MS": "100", "CERTFLEET_RETRY_BACKOFF_MAX_MS": "400",
            "CERTFLEET_CA_BACKOFF_MAX_MS": "1000", "CERTFLEET_CA_OUTAGE_GIVE_UP_SECONDS": "6",
            "CERTFLEET_CA_BUNDLE_URLS": f"https://127.0.0.1:{bundle_port}/",
            "CERTFLEET_CA_BUNDLE_SIGNER": str(ca_dir / "bundle-signing.pem"),
            "CERTFLEET_CA_BUNDLE_TRUST": str(ca_dir / "tls-ca.pem"),
        }
        sim_args = ["--trust-anchor", str(ca_dir / "tls-ca.pem"), "--ca-wait-seconds", "1",
                    "--expired-keyrings", str(EXPIRED_KEYRINGS), "--error-rate", str(ERROR_RATE)]
        stack = Stack(database_url=database_url, broker_url=SHARED_REDIS_URL, log_dir=tmp, devices=DEVICES,
                      workers=2, threads=4, sim_args=sim_args, extra_env=env)
        targets = {"certfleet-controller": [url.removeprefix("http://") for url in stack.api_urls],
                   "certfleet-worker": [url.removeprefix("http://") for url in stack.worker_metrics_urls]}
        deployed = yaml.safe_load((observability.PROMETHEUS_DIR / "prometheus.yml").read_text())

        def prometheus_config(rule_files: list[str]) -> dict:
            # Scrapes get 2 s, so a busy machine's slow answer is no target down; rules run every second.
            return observability.scrape_config_for_test(deployed, targets=targets, rule_files=rule_files,
                                                        interval="2s", evaluation="1s",
                                                        alertmanager=alertmanager_url.removeprefix("http://"))

        # Prometheus starts with the stack, and without rules: its discovery hands it the targets
        # some 5 s after its start, and until then every target would look absent to the rules.
        prometheus, prometheus_url = start_prometheus(prometheus_config([]), tmp)
        procs.append(prometheus)
        # The device simulator reads the CA's trust anchor at start: the CA must have written it.
        est_url = ca_ready_urls(ca)["est"][0]
        cleanup.enter_context(stack)
        # On the way out these are asked to stop first, and stop while the stack does.
        cleanup.callback(lambda: [p.terminate() for p in procs if not p.terminated])
        wait_ready([(prometheus, lambda: ready(prometheus_url)), (alertmanager, lambda: ready(alertmanager_url))])
        api = PrometheusApi(prometheus_url)
        cleanup.callback(api.close)
        client = cleanup.enter_context(CertfleetClient(stack.api_url, stack.token))
        world = Run(stack, client, api, receiver, procs, targets, set(), set())
        # Prometheus watches before anything happens: a counter's increments before its first
        # scrape are lost to rate() and increase(). Then the rules.
        wait_until(lambda: scraped_every_target(api, targets), what="a first scrape of every target",
                   run_logs=world.logs, timeout=30)
        reload_prometheus(prometheus, prometheus_config(scaled_rule_files(tmp)), tmp)
        rules = observability.alert_rules()
        wait_until(lambda: len(api.alerting_rules()) == len(rules), what="the alerting rules loaded",
                   run_logs=world.logs, timeout=30)

        send_poison_message()
        assert client.import_devices(stack.sim_url)["imported"] == DEVICES
        world.expired_keyrings = expired_serials(stack.sim_url)
        assert world.expired_keyrings, "the simulator expired no default keyring"
        # certfleet's own alert webhook, so its deliveries have data.
        client.create_webhook(name="alert receiver", url=certfleet_receiver.url, codes=["F0853"],
                              secret="observability-webhook-secret-0123456789", domain_id=str(GLOBAL_DOMAIN_ID))
        client.run_schedule("device-health")
        # The CA bundle first: its connection checks would find the CA that is down.
        assert client.cert_update_run_now()["outcome"] == "updated"
        batches = enroll(client, est_url, f"https://127.0.0.1:{down_port}/")

        def settled() -> bool:
            return all(client.bulk_enrollment(b["id"])["finished"] for b in batches)

        wait_until(settled, what="every enrollment settled", run_logs=world.logs, timeout=60)
        progress = [client.bulk_enrollment(b["id"]) for b in batches]
        assert [(p["succeeded"], p["failed"]) for p in progress] == [(16, 0), (16, 0), (0, 4), (0, 4)], progress
        assert [(f["error_code"], f["count"]) for f in progress[2]["failures"]] == [("ca_auth_failed", 4)], progress
        assert [(f["error_code"], f["count"]) for f in progress[3]["failures"]] == [("ca_unavailable", 4)], progress
        client.run_schedule("revocation-scan")
        health_runs = [time.monotonic()]
        wait_until(lambda: every_keyring_read(client, health_runs), what="every device's keyring read",
                   run_logs=world.logs, timeout=30)
        wait_until(lambda: dead_lettering_seen(api), what="dead letters", run_logs=world.logs, timeout=30)

        def renewed() -> bool:
            est = [t for t in client.trustpoints() if t["name"] == "vpn-est"]
            return sum(t["last_renewal_at"] is not None for t in est) == EST_GOOD.stop - EST_GOOD.start

        wait_until(renewed, what="every EST certificate renewed", run_logs=world.logs, timeout=3 * VALIDITY_SECONDS)
        world.identifiers = {str(d[key]) for d in client.devices()
                             for key in ("id", "serial", "name", "ip_address", "fqdn") if d.get(key)}
        world.identifiers |= {t["id"] for t in client.trustpoints()}
        yield world


# --- Prometheus ----------------------------------------------------------------------------------

def test_every_scrape_target_is_up(run: Run):
    def down() -> list[str]:
        active = run.prometheus.targets()
        seen = {(t["labels"]["job"], t["labels"]["instance"]) for t in active}
        wanted = {(job, target) for job, targets in run.targets.items() for target in targets}
        return ([f"{t['labels']['job']} {t['scrapeUrl']}: {t['health']} {t.get('lastError', '')}"
                 for t in active if t["health"] != "up"]
                + [f"{job} {target}: not scraped" for job, target in sorted(wanted - seen)])

    poll(down, what="some scrape targets are not up", run=run)


def _draws_nothing(result: list[dict]) -> bool:
    """Whether Grafana would draw nothing: no series, or only NaN (e.g. a quantile of no requests)."""
    return all(math.isnan(float(series["value"][1])) for series in result)


def test_every_dashboard_panel_draws_data(run: Run):
    queries = observability.dashboard_queries()
    assert queries, "no dashboard query found"

    # Drawn once is drawn: a rate over a minute of something that happened once draws for a minute.
    drawn = {q.query for q in queries if q.query in DRAW_NOTHING_WHEN_HEALTHY}
    for query in drawn:
        run.prometheus.query(query)  # still valid PromQL, or this raises

    def empty() -> list[str]:
        drawn.update(q.query for q in queries if q.query not in drawn
                     and not _draws_nothing(run.prometheus.query(q.query)))
        return [f"{q.where()}: {q.query}" for q in queries if q.query not in drawn]

    poll(empty, what="some dashboard panels draw nothing", run=run)


def _firing_at_prometheus(run: Run) -> dict[str, dict]:
    return {name: rule for name, rule in run.prometheus.alerting_rules().items() if rule["state"] == "firing"}


def test_the_alerts_the_run_calls_for_fire_and_reach_the_webhook(run: Run):
    rules = {rule["alert"]: rule for rule in observability.alert_rules()}
    assert set(EXPECTED_ALERTS) <= set(rules), f"no rule named {sorted(set(EXPECTED_ALERTS) - set(rules))}"
    expected = list(EXPECTED_ALERTS)
    # Each alert as Prometheus last showed it firing: one whose condition passes (a failure ratio
    # over a window) fired all the same, and may have resolved by the time the others fire.
    firing: dict[str, dict] = {}

    def missing() -> list[str]:
        firing.update(_firing_at_prometheus(run))
        notified = run.receiver.alerts("firing")
        return [f"{name}: {'seen firing' if name in firing else 'never seen firing'} at Prometheus, "
                f"{'notified' if name in notified else 'not notified'}"
                for name in expected if name not in firing or name not in notified]

    poll(missing, what="some alerts did not fire or reach the webhook", run=run)
    notified = run.receiver.alerts("firing")
    for name in expected:
        rule, payload = rules[name], notified[name]
        assert payload["labels"]["alertname"] == name
        assert rule.get("labels", {}).items() <= payload["labels"].items(), payload["labels"]
        assert payload["annotations"].keys() == rule["annotations"].keys(), payload["annotations"]
        for key, template in rule["annotations"].items():
            text = payload["annotations"][key]
            if "{{" in template:  # rendered by Prometheus: no template text left, no missing value
                assert text.strip() and "{{" not in text and "<no value>" not in text, (name, key, text)
            else:
                assert text == template, (name, key, text)
    # The values the alerts report are the run's: devices with an expired keyring, failed
    # trustpoints, those without a CA certificate, certificates installed (all expire within 7 days).
    value = {name: float(firing[name]["alerts"][0]["value"]) for name in EXPECTED_ALERTS}
    assert value["CertfleetDeviceKeyringExpired"] == len(run.expired_keyrings)
    assert value["CertfleetTrustpointsFailed"] == FAILED
    assert value["CertfleetCATrustpointsFailed"] == EST_DOWN.stop - EST_DOWN.start
    assert value["CertfleetCertificatesExpiringIn7Days"] == EST_GOOD.stop - SELF_SIGNED.start
    assert str(len(run.expired_keyrings)) in notified["CertfleetDeviceKeyringExpired"]["annotations"]["summary"]


def test_no_other_alert_fires(run: Run):
    # Last of the Prometheus checks: the run is as long as it gets, every rule has been evaluated
    # through all of it. ALERTS keeps a series for every alert that was pending or firing.
    ever_fired = {series["metric"]["alertname"]
                  for series in run.prometheus.query('max_over_time(ALERTS{alertstate="firing"}[10m])')}
    others = {rule["alert"] for rule in observability.alert_rules()} - set(EXPECTED_ALERTS)
    assert not ever_fired & others, sorted(ever_fired & others)
    assert not set(run.receiver.alerts("firing")) & others, sorted(set(run.receiver.alerts("firing")) & others)


# --- metric hygiene ------------------------------------------------------------------------------

def test_every_service_exports_bounded_metrics_in_base_units(run: Run):
    pages = {f"{job} {target}": httpx.get(f"http://{target}/metrics", timeout=10).text
             for job, targets in run.targets.items() for target in targets}
    found = {where: metric_hygiene.violations(page, fleet_identifiers=run.identifiers)
             for where, page in pages.items()}
    assert all("certfleet_" in page for page in pages.values())
    assert not any(found.values()), {where: problems for where, problems in found.items() if problems}
