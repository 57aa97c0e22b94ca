"""certfleet's Grafana dashboards, built in code with grafana-foundation-sdk and written as the JSON
files Grafana provisions (deploy/grafana/dashboards/*.json, committed).

    make dashboards                                   # write them
    python deploy/grafana/generate.py --check         # exit 1 when a committed file differs

Every dashboard queries the Prometheus chosen in its ``datasource`` variable (no datasource uid is
written anywhere), uses the metrics of shared/metrics.py (tests/unit/deploy/test_deploy.py checks
each expression against them) and follows two rules: the fleet gauges come from every controller
replica alike, so they are taken with max() over replicas; counters come from the workers (or the
one controller that did the work) and are summed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
EXPIRY_WINDOWS_DAYS = (1, 7, 14, 30, 60, 90)  # shared.metrics.EXPIRY_WINDOWS_DAYS (the test compares them)

Panel = timeseries.Panel | stat.Panel | bargauge.Panel | statetimeline.Panel


# --- building blocks --------------------------------------------------------------------------------


def q(expr: str, legend: str = "") -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    return query.legend_format(legend) if legend else query


def _panel(builder: Panel, title: str, queries: Iterable[prometheus.Dataquery], *, description: str, unit: str,
           width: int, height: int) -> Panel:
    builder = builder.title(title).description(description).datasource(DATASOURCE).span(width).height(height)
    for ref, query in zip("ABCDEFGH", queries, strict=False):
        builder = builder.with_target(query.ref_id(ref))
    return builder.unit(unit) if unit else builder


def graph(title: str, *queries: prometheus.Dataquery, description: str, unit: str = "short", width: int = 12,
          height: int = 8, stacked: bool = False) -> timeseries.Panel:
    panel = _panel(timeseries.Panel(), title, queries, description=description, unit=unit, width=width,
                   height=height).min(0).fill_opacity(10)
    panel = panel.legend(common.VizLegendOptions().display_mode(common_models.LegendDisplayMode.LIST)
                         .placement(common_models.LegendPlacement.BOTTOM).show_legend(True))
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
    return panel


def big_number(title: str, *queries: prometheus.Dataquery, description: str, unit: str = "short", width: int = 6,
               height: int = 5, warn_at: float | None = None, show_name: bool = False) -> stat.Panel:
    panel = _panel(stat.Panel(), title, queries, description=description, unit=unit, width=width, height=height)
    panel = (panel.reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .graph_mode(common_models.BigValueGraphMode.AREA)
             .text_mode(common_models.BigValueTextMode.VALUE_AND_NAME if show_name
                        else common_models.BigValueTextMode.AUTO))
    return panel.thresholds(_thresholds(warn_at))


def bars(title: str, *queries: prometheus.Dataquery, description: str, unit: str = "short", width: int = 8,
         height: int = 8) -> bargauge.Panel:
    panel = _panel(bargauge.Panel(), title, queries, description=description, unit=unit, width=width,
                   height=height)
    return (panel.reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .display_mode(common_models.BarGaugeDisplayMode.BASIC)
            .orientation(common_models.VizOrientation.HORIZONTAL).min(0))


def _thresholds(warn_at: float | None) -> dashboard.ThresholdsConfig:
    steps = [models.Threshold(value=None, color="green")]
    if warn_at is not None:
        steps.append(models.Threshold(value=warn_at, color="red"))
    return dashboard.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps(steps)


CIRCUIT_STATES = [models.ValueMap(options={
    "0": models.ValueMappingResult(text="closed", color="green", index=0),
    "1": models.ValueMappingResult(text="open (CA down)", color="red", index=1),
})]


def build(uid: str, title: str, description: str, rows: list[tuple[str, list[Panel]]],
          variables: Iterable[dashboard.CustomVariable] = ()) -> dashboard.Dashboard:
    """A certfleet dashboard: its rows of panels (ids in order), the datasource variable first, links
    to the other certfleet dashboards."""
    board = (dashboard.Dashboard(title).uid(uid).description(description).tags(["certfleet"]).timezone("utc")
             .readonly().tooltip(models.DashboardCursorSync.CROSSHAIR).refresh("30s").time("now-6h", "now")
             .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
             .link(dashboard.DashboardLink("certfleet").type(models.DashboardLinkType.DASHBOARDS)
                   .tags(["certfleet"]).as_dropdown(True).keep_time(True).include_vars(True)))
    for variable in variables:
        board = board.with_variable(variable)
    next_id = 1
    for row_title, panels in rows:
        board = board.with_row(dashboard.Row(row_title).id(next_id))
        next_id += 1
        for panel in panels:
            board = board.with_panel(panel.id(next_id))
            next_id += 1
    return board


# --- the dashboards -----------------------------------------------------------------------------------


def fleet() -> dashboard.Dashboard:
    days = (dashboard.CustomVariable("days").label("Expiring within (days)")
            .values(",".join(str(d) for d in EXPIRY_WINDOWS_DAYS))
            .current(models.VariableOption(selected=True, text="30", value="30"))
            .options([models.VariableOption(selected=d == 30, text=str(d), value=str(d))
                      for d in EXPIRY_WINDOWS_DAYS]))
    by_status = "max by (ca_status, identity_status) (certfleet_trustpoints)"
    return build("certfleet-fleet", "certfleet fleet",
                 "Trustpoints, enrollments and their failures, certificate expiry and the job queues of a certfleet "
                 "deployment.", [
        ("Fleet", [
            bars("Trustpoints by identity certificate status",
                 q(f"sum by (identity_status) ({by_status})", "{{identity_status}}"),
                 description="Trustpoints counted by the status of their identity certificate."),
            bars("Trustpoints by CA certificate status",
                 q(f"sum by (ca_status) ({by_status})", "{{ca_status}}"),
                 description="Trustpoints counted by the status of their CA certificate."),
            big_number("Certificates expiring within $days days",
                       q('max(certfleet_certificates_expiring{within_days="$days"})', "expiring (expired included)"),
                       q("max(certfleet_certificates_expired)", "expired"),
                       description="Installed identity certificates that end within the chosen window, and those "
                                   "already past their end.", width=8, height=8, warn_at=1, show_name=True),
            graph("Trustpoints by status over time", q(by_status, "CA {{ca_status}} / identity {{identity_status}}"),
                  description="Every (CA status, identity status) pair."),
            bars("Certificates expiring, by window", q("max by (within_days) (certfleet_certificates_expiring)",
                                                       "within {{within_days}} days"),
                 description="Installed identity certificates ending within each window (expired included).",
                 width=12),
        ]),
        ("Enrollment", [
            graph("Enrollments/s by method and outcome",
                  q(f"sum by (method, outcome) (rate(certfleet_enrollments_total[{RATE}]))", "{{method}} {{outcome}}"),
                  description="Enrollment exchanges finished by the workers (enroll and re-enroll jobs)."),
            graph("Enrollment failures/s by method and error code",
                  q(f"sum by (method, code) (rate(certfleet_enrollment_failures_total[{RATE}]))",
                    "{{method}} {{code}}"),
                  description="Enrollments that failed for good, by the error code the trustpoint shows (codes past "
                              "the first hundred a worker saw count as 'other')."),
            graph("Enrollment duration p50 / p99",
                  q("histogram_quantile(0.5, sum by (le, method) "
                    f"(rate(certfleet_enrollment_duration_seconds_bucket[{RATE}])))", "p50 {{method}}"),
                  q("histogram_quantile(0.99, sum by (le, method) "
                    f"(rate(certfleet_enrollment_duration_seconds_bucket[{RATE}])))", "p99 {{method}}"),
                  description="From a worker claiming an enrollment job to its end.", unit="s"),
            graph("Job retries/s by kind and error",
                  q(f"sum by (kind, code) (rate(certfleet_job_retries_total[{RATE}]))", "{{kind}} {{code}}"),
                  description="Transient failures (device or CA) that scheduled a retry."),
            graph("Jobs finished/s by kind and outcome",
                  q(f"sum by (kind, outcome) (rate(certfleet_jobs_total[{RATE}]))", "{{kind}} {{outcome}}"),
                  description="Every job kind: enroll, re-enroll, refresh, delete, imports, CA-bundle pushes, "
                              "keyring regenerations.", width=8),
            graph("Events published and reconciler re-publications/s",
                  q(f"sum by (actor) (rate(certfleet_events_published_total[{RATE}]))", "published {{actor}}"),
                  q(f"sum(rate(certfleet_reconciler_republished_total[{RATE}]))", "re-published"),
                  description="Job messages the controller published, and those the reconciler published again "
                              "because their lease expired or their message was lost.", width=8),
            graph("Jobs waiting and running, by kind",
                  q("max by (kind, state) (certfleet_jobs_unfinished)", "{{kind}} {{state}}"),
                  description="Unfinished jobs: queued (waiting for a worker, a retry or their CA) and running.",
                  width=8, stacked=True),
        ]),
        ("Job queue", [
            big_number("Jobs queued", q('sum(max by (kind) (certfleet_jobs_unfinished{state="queued"}))', "queued"),
                       description="Jobs waiting for a worker, a retry or their CA."),
            big_number("Longest wait of a queued job", q("max(certfleet_jobs_oldest_queued_age_seconds)", "waited"),
                       description="Since the job was created or its retry came due. Over 30 minutes raises "
                                   "CertfleetJobQueueStalled.", unit="s", warn_at=1800),
            graph("Longest wait of a queued job, by kind",
                  q("max by (kind) (certfleet_jobs_oldest_queued_age_seconds)", "{{kind}}"),
                  description="0 when no job of the kind is waiting.", unit="s"),
        ]),
        ("Queues and workers (Dramatiq)", [
            graph("Messages processed/s by actor",
                  q(f"sum by (actor_name) (rate(dramatiq_messages_total[{RATE}]))", "processed {{actor_name}}"),
                  q(f"sum by (actor_name) (rate(dramatiq_message_errors_total[{RATE}]))", "errors {{actor_name}}"),
                  q(f"sum by (actor_name) (rate(dramatiq_message_retries_total[{RATE}]))", "retries {{actor_name}}"),
                  q(f"sum by (actor_name) (rate(dramatiq_message_rejects_total[{RATE}]))",
                    "dead-lettered {{actor_name}}"),
                  description="Dramatiq's own counters, over every worker process."),
            graph("Messages in progress by queue",
                  q("sum by (queue_name) (dramatiq_messages_inprogress)", "running {{queue_name}}"),
                  q("sum by (queue_name) (dramatiq_delayed_messages_inprogress)", "delayed {{queue_name}}"),
                  description="Messages the workers hold: running, or delayed (a retry's backoff).", width=6),
            big_number("Workers up", q('count(up{job="certfleet-worker"} == 1) or vector(0)', "up"),
                       q('count(up{job="certfleet-worker"} == 0) or vector(0)', "down"),
                       description="Worker metrics endpoints Prometheus scrapes.", height=8, show_name=True),
            graph("Message duration p50 / p99 by actor",
                  q("histogram_quantile(0.5, sum by (le, actor_name) "
                    f"(rate(dramatiq_message_duration_milliseconds_bucket[{RATE}])))", "p50 {{actor_name}}"),
                  q("histogram_quantile(0.99, sum by (le, actor_name) "
                    f"(rate(dramatiq_message_duration_milliseconds_bucket[{RATE}])))", "p99 {{actor_name}}"),
                  description="Dramatiq measures in milliseconds.", unit="ms", width=24),
        ]),
    ], variables=[days])


def renewal() -> dashboard.Dashboard:
    return build("certfleet-renewal", "certfleet renewal",
                 "Automatic renewal: what is due, under way, renewed and failing, and the renewal pass itself.", [
        ("Renewal", [
            big_number("Due for renewal", q("sum(max by (method) (certfleet_certificates_renewal_due))", "due"),
                       description="Identity certificates past their renewal time and not renewed yet (manual and "
                                   "PKCS#12 ones wait for an operator)."),
            big_number("Renewals under way", q("sum(max by (method) (certfleet_renewals_in_progress))", "under way"),
                       description="Renewal jobs queued or running."),
            big_number("Trustpoints whose renewal failed",
                       q("sum(max by (method) (certfleet_trustpoints_renewal_failed))", "failing"),
                       description="Retried with backoff while the certificate lasts; certfleet alerts list --code "
                                   "CF-RENEW-FAILED says why.", warn_at=1),
            big_number("Since the last renewal pass",
                       q('time() - max(certfleet_scheduler_last_run_timestamp_seconds{schedule="renewal"})', "ago"),
                       description="The renewal schedule runs every 60 s by default; over 10 minutes raises "
                                   "CertfleetRenewalPassStalled.", unit="s", warn_at=600),
            graph("Due for renewal, by method", q("max by (method) (certfleet_certificates_renewal_due)", "{{method}}"),
                  description="Due and not renewed yet, by enrollment method."),
            graph("Renewals under way, by method", q("max by (method) (certfleet_renewals_in_progress)", "{{method}}"),
                  description="Re-enroll jobs the renewal pass published that have not ended."),
            graph("Renewals finished/s by method and outcome",
                  q(f"sum by (method, outcome) (rate(certfleet_renewals_total[{RATE}]))", "{{method}} {{outcome}}"),
                  description="Automatic renewals the workers finished: renewed (succeeded) or failed."),
            graph("Trustpoints whose renewal failed, by method",
                  q("max by (method) (certfleet_trustpoints_renewal_failed)", "{{method}}"),
                  description="Failed since their last success; cleared by the next success."),
        ]),
        ("Expiry and the scheduler", [
            bars("Certificates expiring, by window",
                 q("max by (within_days) (certfleet_certificates_expiring)", "within {{within_days}} days"),
                 description="Installed identity certificates ending within each window (expired included)."),
            big_number("Time left on the certificate that expires first",
                       q("min(certfleet_certificate_earliest_expiry_timestamp_seconds) - time()", "left"),
                       description="Negative once it has expired.", unit="s", width=8, height=8),
            big_number("Expired certificates", q("max(certfleet_certificates_expired)", "expired"),
                       description="Installed identity certificates past their end.", width=8, height=8, warn_at=1),
            graph("Scheduler runs/s by schedule and outcome",
                  q(f"sum by (schedule, outcome) (rate(certfleet_scheduler_runs_total[{RATE}]))",
                    "{{schedule}} {{outcome}}"),
                  description="Runs the leading controller fired."),
            graph("Controllers leading the scheduler", q("sum(certfleet_scheduler_leader)", "leaders"),
                  description="One while the scheduler runs; none: nothing is renewed, checked or pushed."),
        ]),
    ])


def ca_bundle() -> dashboard.Dashboard:
    devices = "max(sum without (version) (certfleet_devices_ca_bundle))"
    return build("certfleet-ca-bundle", "certfleet CA bundle",
                 "certfleet's CA bundle: the version installed, the devices holding it, its updates and their "
                 "connection checks.", [
        ("CA bundle", [
            big_number("Installed version", q("max by (version) (certfleet_ca_bundle_version_info)", "{{version}}"),
                       description="The version of certfleet's CA bundle.", show_name=True),
            big_number("Devices on the current version",
                       q(f'max(certfleet_devices_ca_bundle{{version="current"}}) / {devices}', "share"),
                       description="Share of the devices that confirmed the installed version.", unit="percentunit"),
            big_number("Since the bundle was last replaced",
                       q("time() - max(certfleet_ca_bundle_last_modified_timestamp_seconds)", "ago"),
                       description="When certfleet's CA bundle last changed.", unit="s"),
            big_number("Since the last update check and drift pass",
                       q("time() - max by (schedule) (certfleet_scheduler_last_run_timestamp_seconds"
                         '{schedule=~"ca-bundle-update|ca-bundle-drift"})', "{{schedule}}"),
                       description="ca-bundle-update runs daily; ca-bundle-drift every few minutes pushes the bundle "
                                   "to devices that lack it.", unit="s", show_name=True),
            graph("Devices by CA bundle version", q("max by (version) (certfleet_devices_ca_bundle)", "{{version}}"),
                  description="Devices on the current version and on an older one (or none).", stacked=True),
            bars("Tests and updates in the last day, by outcome",
                 q("sum by (outcome) (increase(certfleet_ca_bundle_updates_total[1d]))", "{{outcome}}"),
                 description="updated, up_to_date, forced; failed_checks, invalid, unreachable (refused: the old "
                             "bundle stays); checks_passed and checks_failed for tests.", width=6),
            bars("Connection checks in the last day",
                 q("sum by (outcome) (increase(certfleet_ca_bundle_connection_checks_total[1d]))", "{{outcome}}"),
                 description="TLS handshakes with a candidate bundle before it is installed, one per server.",
                 width=6),
            graph("Bundle pushes/s by outcome",
                  q(f'sum by (outcome) (rate(certfleet_jobs_total{{kind="bundle_update"}}[{RATE}]))', "{{outcome}}"),
                  description="Pushes of the bundle to devices the workers finished."),
            graph("Bundle pushes waiting and running",
                  q('max by (state) (certfleet_jobs_unfinished{kind="bundle_update"})', "{{state}}"),
                  description="Unfinished push jobs."),
        ]),
    ])


def revocation() -> dashboard.Dashboard:
    return build("certfleet-revocation", "certfleet revocation",
                 "Revoked certificates still installed, and the revocation scan's checks.", [
        ("Revocation", [
            big_number("Revoked certificates installed", q("max(certfleet_certificates_revoked)", "revoked"),
                       description="Replace them: certfleet re-enroll --object NAME --all --status revoked.",
                       warn_at=1),
            big_number("Checks with no answer (last day)",
                       q('sum(increase(certfleet_revocation_checks_total{outcome="unknown"}[1d])) '
                         "/ sum(increase(certfleet_revocation_checks_total[1d]))", "unknown"),
                       description="Neither CRL nor OCSP could answer; over 10% raises "
                                   "CertfleetRevocationChecksUnanswered.", unit="percentunit", warn_at=0.1),
            big_number("Since the last revocation scan",
                       q('time() - max(certfleet_scheduler_last_run_timestamp_seconds{schedule="revocation-scan"})',
                         "ago"),
                       description="The scan runs hourly by default.", unit="s"),
            bars("Checks in the last day, by source and outcome",
                 q("sum by (source, outcome) (increase(certfleet_revocation_checks_total[1d]))",
                   "{{source}} {{outcome}}"),
                 description="Which source answered (crl, ocsp, none) and what (good, revoked, unknown).", width=6,
                 height=5),
            graph("Revoked certificates installed over time", q("max(certfleet_certificates_revoked)", "revoked"),
                  description="Identity certificates the scan found revoked and not replaced yet."),
            graph("Revocation checks/s by source and outcome",
                  q(f"sum by (source, outcome) (rate(certfleet_revocation_checks_total[{RATE}]))",
                    "{{source}} {{outcome}}"),
                  description="The scan's checks as they happen."),
        ]),
    ])


def health_alerts() -> dashboard.Dashboard:
    open_alerts = "max by (code, severity) (certfleet_alerts_active)"
    webhook = 'certfleet_alert_deliveries_total{channel="webhook"'
    return build("certfleet-health-alerts", "certfleet health alerts",
                 "certfleet's health alerts (F0853 and its own codes) and their delivery to the stream and webhooks.", [
        ("Alerts", [
            big_number("Open alerts", q(f"sum({open_alerts})", "open"),
                       description="Active or acknowledged, every code."),
            big_number("F0853: invalid default keyrings",
                       q('sum(max by (severity) (certfleet_alerts_active{code="F0853"}))', "F0853"),
                       description="Regenerate them: certfleet system support regenerate-security-keyring default "
                                   "--all-expired.", warn_at=1),
            big_number("Webhook deliveries given up (last day)",
                       q('sum(increase(certfleet_alert_deliveries_total{outcome="dead"}[1d]))', "dead"),
                       description="certfleet webhooks deliveries WEBHOOK_ID --state dead lists them.", warn_at=1),
            big_number("Failed share of webhook attempts",
                       q(f'sum(rate({webhook},outcome="failed"}}[{RATE}])) '
                         f'/ sum(rate({webhook},outcome=~"delivered|failed"}}[{RATE}]))', "failed"),
                       description="Over 20% for 15 minutes raises CertfleetAlertWebhooksFailing.",
                       unit="percentunit", warn_at=0.2),
            bars("Open alerts by code", q(f"sum by (code) ({open_alerts})", "{{code}}"),
                 description="F0853 and certfleet's CF-* codes.", width=12),
            bars("Open alerts by severity", q(f"sum by (severity) ({open_alerts})", "{{severity}}"),
                 description="critical, major, minor, warning.", width=12),
            graph("Open alerts by code over time", q(f"sum by (code) ({open_alerts})", "{{code}}"),
                  description="Raised by the alert-conditions schedule, cleared when the condition ends.",
                  stacked=True),
            graph("Alert deliveries/s by channel and outcome",
                  q(f"sum by (channel, outcome) (rate(certfleet_alert_deliveries_total[{RATE}]))",
                    "{{channel}} {{outcome}}"),
                  description="Stream entries and webhook attempts: delivered, failed (retried), dead (given up)."),
        ]),
        ("The passes behind them", [
            big_number("Since the last alert and health passes",
                       q("time() - max by (schedule) (certfleet_scheduler_last_run_timestamp_seconds"
                         '{schedule=~"alert-conditions|device-health"})', "{{schedule}}"),
                       description="The health pass reads every device's keyring; the alert pass raises and clears "
                                   "the alerts.", unit="s", width=8, height=8, show_name=True),
            graph("Keyring regenerations/s by outcome",
                  q(f'sum by (outcome) (rate(certfleet_jobs_total{{kind="regenerate_keyring"}}[{RATE}]))',
                    "{{outcome}}"),
                  description="Jobs running system support regenerate-security-keyring default.", width=16),
        ]),
    ])


def ca_endpoints() -> dashboard.Dashboard:
    exchanges = "certfleet_ca_exchanges_total"
    return build("certfleet-ca-endpoints", "certfleet CA endpoints",
                 "The CA servers (scheme://host:port) enrollments go through: their circuits, the waits their "
                 "limits cause, and how their exchanges end.", [
        ("CA endpoints", [
            big_number("Circuit by CA endpoint", q("max by (endpoint) (certfleet_ca_circuit_open)", "{{endpoint}}"),
                       description="Open: the workers count the CA as down; its enrollments wait and one at a time "
                                   "probes it. Endpoints used within a day.", width=24, show_name=True)
            .mappings(CIRCUIT_STATES).thresholds(_thresholds(1)).graph_mode(common_models.BigValueGraphMode.NONE),
            statetimeline.Panel().title("Circuit history").description("Closed or open, per CA endpoint.")
            .datasource(DATASOURCE).span(24).height(6).mappings(CIRCUIT_STATES).thresholds(_thresholds(1))
            .with_target(q("max by (endpoint) (certfleet_ca_circuit_open)", "{{endpoint}}").ref_id("A")),
            graph("Jobs sent back to wait/s, by endpoint and reason",
                  q(f"sum by (endpoint, reason) (rate(certfleet_ca_gate_waits_total[{RATE}]))",
                    "{{endpoint}} {{reason}}"),
                  description="rate and concurrency: the CA's limits (CERTFLEET_CA_RATE_PER_SECOND, "
                              "CERTFLEET_CA_CONCURRENCY or the object's own); circuit: the CA is down. Waiting "
                              "spends none of a job's attempts."),
            graph("Enrollments through the gate/s, by endpoint and outcome",
                  q(f"sum by (endpoint, outcome) (rate({exchanges}[{RATE}]))", "{{endpoint}} {{outcome}}"),
                  description="succeeded; ca_unavailable (counts towards opening the circuit); failed (the "
                              "device's trouble, or the CA's refusal)."),
            graph("CA unavailable share, by endpoint",
                  q(f'sum by (endpoint) (rate({exchanges}{{outcome="ca_unavailable"}}[{RATE}])) '
                    f"/ sum by (endpoint) (rate({exchanges}[{RATE}]))", "{{endpoint}}"),
                  description="Of the enrollments through the gate.", unit="percentunit"),
            graph("Retries for CA errors/s, by code",
                  q(f'sum by (code) (rate(certfleet_job_retries_total{{code=~"ca_.*"}}[{RATE}]))', "{{code}}"),
                  description="Retryable CA failures the devices reported (refused, timeout, 5xx, …)."),
        ]),
    ])


DASHBOARDS = {
    "certfleet-fleet.json": fleet,
    "certfleet-renewal.json": renewal,
    "certfleet-ca-bundle.json": ca_bundle,
    "certfleet-revocation.json": revocation,
    "certfleet-health-alerts.json": health_alerts,
    "certfleet-ca-endpoints.json": ca_endpoints,
}


def render() -> dict[str, str]:
    """File name -> the JSON Grafana provisions."""
    encoder = JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False)
    return {name: encoder.encode(make().build()) + "\n" for name, make in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, change nothing")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the dashboards go (default {OUT})")
    args = parser.parse_args(argv)
    wanted = render()
    if args.check:
        stale = sorted(name for name, text in wanted.items()
                       if not (args.out / name).exists() or (args.out / name).read_text() != text)
        strays = sorted(p.name for p in args.out.glob("*.json") if p.name not in wanted)
        for name in stale:
            print(f"{args.out / name}: differs from what deploy/grafana/generate.py makes: run make dashboards")
        for name in strays:
            print(f"{args.out / name}: made by nothing; add it to deploy/grafana/generate.py or remove it")
        return 1 if stale or strays else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in wanted.items():
        (args.out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
