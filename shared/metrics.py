"""Every Prometheus metric certfleet defines, in one place.

Counters and histograms are updated by the workers (in multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set). Fleet-wide gauges (trustpoints by status,
certificates expiring, jobs waiting) are computed from the database at scrape time by
:class:`FleetCollector`, so they stay right whatever the workers did, and stay a
fixed, small set of series however many devices there are.

Naming: base units (``_seconds``, ``_bytes``), counters end in ``_total``, and no label takes a
value per device, serial, trustpoint or URL path. Two labels are bounded by configuration
rather than by a closed list: ``endpoint``, a CA's ``scheme://host:port`` (one per CA server the
enrollment objects name, see :func:`services.worker.ca_gate.ca_endpoint`), and ``code``, an error
code (the codes certfleet and its devices use, at most :data:`MAX_CODES` per process, the rest
counted as ``other``: see :func:`bounded_code`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from shared.enums import AlertCode, JobKind, JobState, Severity

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
ENROLLMENT_FAILURES = Counter(
    "certfleet_enrollment_failures",
    "Enrollments (enroll and re-enroll jobs) that failed for good, by enrollment method and error code.",
    ["method", "code"],
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
CA_BUNDLE_CONNECTION_CHECKS = Counter(
    "certfleet_ca_bundle_connection_checks",
    "TLS handshakes with a candidate CA bundle before it is installed (tests and updates), by outcome "
    "(passed, failed).",
    ["outcome"],
)
for _outcome in ("passed", "failed"):
    CA_BUNDLE_CONNECTION_CHECKS.labels(outcome=_outcome)
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

CA_GATE_WAITS = Counter(
    "certfleet_ca_gate_waits",
    "Jobs sent back to the queue to wait for their CA endpoint (scheme://host:port), by reason: rate or "
    "concurrency (the CA's limits), circuit (the CA is down).",
    ["endpoint", "reason"],
)
CA_EXCHANGES = Counter(
    "certfleet_ca_exchanges",
    "Enrollments that passed a CA endpoint's gate, by how they ended for the CA: succeeded, ca_unavailable "
    "(counts towards opening the circuit), failed (another failure: the device's, or the CA's refusal).",
    ["endpoint", "outcome"],
)

#: Distinct error codes a process gives the ``code`` label; further ones are counted as "other".
MAX_CODES = 100
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_codes_seen: set[str] = set()
_codes_lock = threading.Lock()


def bounded_code(code: str | None) -> str:
    """``code`` as a label value: a stable error code as it is, anything else (empty, free text, a
    new code past the first :data:`MAX_CODES`) as ``other``, so a device inventing codes cannot
    grow the series without end."""
    if not code or not _CODE.fullmatch(code):
        return "other"
    with _codes_lock:
        if code in _codes_seen:
            return code
        if len(_codes_seen) >= MAX_CODES:
            return "other"
        _codes_seen.add(code)
        return code


#: Enrollment methods, each a series of certfleet_certificates_renewal_due (a fixed set).
RENEWAL_METHODS = ("self_signed", "est", "scep", "manual", "pkcs12")

#: The "expires within N days" windows offered as series.
EXPIRY_WINDOWS_DAYS = (1, 7, 14, 30, 60, 90)
#: Job kinds and the unfinished states, each pair a series of certfleet_jobs_unfinished (zeros included).
JOB_KINDS = tuple(kind.value for kind in JobKind)
UNFINISHED_STATES = (JobState.QUEUED.value, JobState.RUNNING.value)


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
        in_progress = GaugeMetricFamily(
            "certfleet_renewals_in_progress",
            "Automatic renewals under way (their re-enroll job queued or running), by enrollment method.",
            labels=["method"],
        )
        renewal_failed = GaugeMetricFamily(
            "certfleet_trustpoints_renewal_failed",
            "Trustpoints whose automatic renewal failed since their last success (retried after a backoff "
            "while the certificate lasts), by enrollment method.",
            labels=["method"],
        )
        for method in RENEWAL_METHODS:
            in_progress.add_metric([method], snap.renewals_in_progress.get(method, 0))
            renewal_failed.add_metric([method], snap.renewals_failed.get(method, 0))
        yield in_progress
        yield renewal_failed
        unfinished = GaugeMetricFamily(
            "certfleet_jobs_unfinished",
            "Jobs not finished yet, by kind and state (queued: waiting for a worker, a retry or its CA; "
            "running: claimed by a worker).",
            labels=["kind", "state"],
        )
        for kind in JOB_KINDS:
            for state in UNFINISHED_STATES:
                unfinished.add_metric([kind, state], snap.jobs_unfinished.get((kind, state), 0))
        yield unfinished
        queue_age = GaugeMetricFamily(
            "certfleet_jobs_oldest_queued_age_seconds",
            "How long the longest-waiting queued job of each kind has been ready to run (since it was "
            "created or its retry came due); 0 when none is.",
            labels=["kind"],
        )
        for kind in JOB_KINDS:
            queue_age.add_metric([kind], snap.oldest_queued_age.get(kind, 0.0))
        yield queue_age
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
        renewals_in_progress: dict[str, int] | None = None,
        renewals_failed: dict[str, int] | None = None,
        jobs_unfinished: dict[tuple[str, str], int] | None = None,
        oldest_queued_age: dict[str, float] | None = None,
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
        #: By enrollment method: renewal jobs unfinished; trustpoints whose renewal failed.
        self.renewals_in_progress = renewals_in_progress or {}
        self.renewals_failed = renewals_failed or {}
        #: Unfinished jobs by (kind, state); seconds the oldest ready queued job of a kind has waited.
        self.jobs_unfinished = jobs_unfinished or {}
        self.oldest_queued_age = oldest_queued_age or {}

    def statuses_total(self, side: str, status: str) -> int:
        """Trustpoints whose CA (``side`` "ca") or identity status is ``status``."""
        index = 0 if side == "ca" else 1
        return sum(count for pair, count in self.statuses.items() if pair[index] == status)


class CaCircuitCollector(Collector):
    """``certfleet_ca_circuit_open{endpoint}``, read on every scrape from the CA gate the workers share
    (Redis): 1 while the endpoint's circuit is open or waiting for a probe to succeed, 0 for the other
    endpoints the gate has seen within a day. ``read`` returns endpoint -> open. When the gate cannot
    be read (Redis down) the metric is left out of the scrape rather than failing it."""

    def __init__(self, read: Callable[[], dict[str, bool]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            states = self._read()
        except Exception:  # the scrape must not fail with the broker: the other metrics still count
            return
        family = GaugeMetricFamily(
            "certfleet_ca_circuit_open",
            "1 while the CA gate counts the CA endpoint (scheme://host:port) as down, else 0.",
            labels=["endpoint"],
        )
        for endpoint, is_open in sorted(states.items()):
            family.add_metric([endpoint], 1 if is_open else 0)
        yield family
