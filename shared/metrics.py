"""Every Prometheus metric certfleet defines, in one place.

Counters and histograms are updated by the workers (in multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set). Fleet-wide gauges (trustpoints by status,
certificates expiring) are computed from the database at scrape time by
:class:`FleetCollector`, so they stay right whatever the workers did, and stay a
fixed, small set of series however many devices there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from shared.enums import AlertCode, Severity

ENROLLMENTS = Counter(
    "certfleet_enrollments",
    "Enrollment exchanges finished, by enrollment method and outcome.",
    ["method", "outcome"],
)
ENROLLMENT_DURATION = Histogram(
    "certfleet_enrollment_duration_seconds",
    "Time from a worker claiming an enrollment job to its end, by enrollment method.",
    ["method"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
JOBS = Counter(
    "certfleet_jobs",
    "Jobs finished by the workers, by kind and outcome.",
    ["kind", "outcome"],
)
JOB_RETRIES = Counter(
    "certfleet_job_retries",
    "Transient failures that scheduled a retry, by job kind and error code.",
    ["kind", "code"],
)
RENEWALS = Counter(
    "certfleet_renewals",
    "Automatic renewals finished, by enrollment method and outcome (succeeded or failed).",
    ["method", "outcome"],
)
CA_BUNDLE_UPDATES = Counter(
    "certfleet_ca_bundle_updates",
    "CA-bundle tests and updates, by outcome (updated, up_to_date, failed_checks, forced, invalid, "
    "unreachable; for tests checks_passed and checks_failed).",
    ["outcome"],
)
REVOCATION_CHECKS = Counter(
    "certfleet_revocation_checks",
    "Revocation checks of installed identity certificates by the revocation scan, by the source that "
    "answered (crl, ocsp, none) and the answer (good, revoked, unknown).",
    ["source", "outcome"],
)
SCHEDULER_RUNS = Counter(
    "certfleet_scheduler_runs",
    "Scheduled runs this controller fired as the leader, by schedule and outcome "
    "(succeeded, failed, interrupted).",
    ["schedule", "outcome"],
)
SCHEDULER_LEADER = Gauge(
    "certfleet_scheduler_leader",
    "1 while this controller leads the scheduler, else 0.",
    multiprocess_mode="livemax",
)
EVENTS_PUBLISHED = Counter(
    "certfleet_events_published",
    "Events the controller and reconciler published to the broker, by actor.",
    ["actor"],
)
RECONCILER_REPUBLISHED = Counter(
    "certfleet_reconciler_republished",
    "Jobs the reconciler re-published because their lease expired or their message was lost.",
)
ALERT_DELIVERIES = Counter(
    "certfleet_alert_deliveries",
    "Alert events handed to consumers by the alert relay, by channel (stream, webhook) and outcome: delivered; "
    "failed (an attempt that will be retried, or a stream write that failed); dead (a webhook delivery's last "
    "attempt failed: given up).",
    ["channel", "outcome"],
)
#: Every series exists from the start, at 0: a dashboard's rate() sees the first failure.
for _channel in ("stream", "webhook"):
    for _outcome in ("delivered", "failed", "dead"):
        ALERT_DELIVERIES.labels(channel=_channel, outcome=_outcome)

#: Enrollment methods, each a series of certfleet_certificates_renewal_due (a fixed set).
RENEWAL_METHODS = ("self_signed", "est", "scep", "manual", "pkcs12")

#: The "expires within N days" windows offered as series.
EXPIRY_WINDOWS_DAYS = (1, 7, 14, 30, 60, 90)


class FleetCollector(Collector):
    """Gauges computed from the database on every scrape.

    ``read`` returns (status counts, expiry counts, expired count) — see
    :func:`services.controller.fleet_stats.read_fleet_stats`.
    """

    def __init__(self, read: Callable[[], FleetSnapshot]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        snap = self._read()
        trustpoints = GaugeMetricFamily(
            "certfleet_trustpoints",
            "Trustpoints by CA-certificate and identity-certificate status.",
            labels=["ca_status", "identity_status"],
        )
        for (ca, identity), count in sorted(snap.statuses.items()):
            trustpoints.add_metric([ca, identity], count)
        yield trustpoints
        expiring = GaugeMetricFamily(
            "certfleet_certificates_expiring",
            "Installed identity certificates that expire within the given number of days "
            "(already expired ones included).",
            labels=["within_days"],
        )
        for days, count in sorted(snap.expiring_within.items()):
            expiring.add_metric([str(days)], count)
        yield expiring
        yield GaugeMetricFamily(
            "certfleet_certificates_expired",
            "Installed identity certificates past their notAfter.",
            value=snap.expired,
        )
        renewal_due = GaugeMetricFamily(
            "certfleet_certificates_renewal_due",
            "Identity certificates due for renewal and not renewed yet, by enrollment method "
            "(manual and pkcs12 ones wait for an operator).",
            labels=["method"],
        )
        for method in RENEWAL_METHODS:
            renewal_due.add_metric([method], snap.renewal_due.get(method, 0))
        yield renewal_due
        last_runs = GaugeMetricFamily(
            "certfleet_scheduler_last_run_timestamp_seconds",
            "When each schedule's last run started (Unix time), whichever controller ran it.",
            labels=["schedule"],
        )
        for schedule, started in sorted(snap.schedule_last_runs.items()):
            last_runs.add_metric([schedule], started)
        yield last_runs
        if snap.ca_bundle_version:
            info = InfoMetricFamily("certfleet_ca_bundle_version", "certfleet's installed CA bundle.",
                                    labels=["version", "sha256"])
            info.add_metric([snap.ca_bundle_version, snap.ca_bundle_sha256], {})
            yield info
        if snap.ca_bundle_last_modified is not None:
            yield GaugeMetricFamily("certfleet_ca_bundle_last_modified_timestamp_seconds",
                                    "When certfleet's CA bundle was last replaced (Unix time).",
                                    value=snap.ca_bundle_last_modified)
        yield GaugeMetricFamily("certfleet_certificates_revoked",
                                "Installed identity certificates the revocation scan found revoked.",
                                value=snap.statuses_total("identity", "revoked"))
        on_bundle = GaugeMetricFamily("certfleet_devices_ca_bundle",
                                      "Devices holding the current CA bundle version, and the others.",
                                      labels=["version"])
        on_bundle.add_metric(["current"], snap.devices_on_bundle.get("current", 0))
        on_bundle.add_metric(["older"], snap.devices_on_bundle.get("older", 0))
        yield on_bundle
        alerts = GaugeMetricFamily(
            "certfleet_alerts_active",
            "Open alerts (active or acknowledged) by code and severity; every pair is a series, zeros included.",
            labels=["code", "severity"],
        )
        for code in AlertCode:
            for severity in Severity:
                alerts.add_metric([code.value, severity.value], snap.alerts_open.get((code.value, severity.value), 0))
        yield alerts
        if snap.earliest_expiry is not None:
            yield GaugeMetricFamily(
                "certfleet_certificate_earliest_expiry_timestamp_seconds",
                "notAfter of the installed identity certificate that expires first (Unix time).",
                value=snap.earliest_expiry,
            )


class FleetSnapshot:
    def __init__(
        self,
        statuses: dict[tuple[str, str], int],
        expiring_within: dict[int, int],
        expired: int,
        earliest_expiry: float | None,
        renewal_due: dict[str, int] | None = None,
        schedule_last_runs: dict[str, float] | None = None,
        ca_bundle_version: str = "",
        ca_bundle_sha256: str = "",
        ca_bundle_last_modified: float | None = None,
        devices_on_bundle: dict[str, int] | None = None,
        alerts_open: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.statuses = statuses
        self.expiring_within = expiring_within
        self.expired = expired
        self.earliest_expiry = earliest_expiry
        self.renewal_due = renewal_due or {}
        self.schedule_last_runs = schedule_last_runs or {}
        self.ca_bundle_version, self.ca_bundle_sha256 = ca_bundle_version, ca_bundle_sha256
        self.ca_bundle_last_modified = ca_bundle_last_modified
        self.devices_on_bundle = devices_on_bundle or {}
        #: Open (active or acknowledged) alerts by (code, severity).
        self.alerts_open = alerts_open or {}

    def statuses_total(self, side: str, status: str) -> int:
        """Trustpoints whose CA (``side`` "ca") or identity status is ``status``."""
        index = 0 if side == "ca" else 1
        return sum(count for pair, count in self.statuses.items() if pair[index] == status)
