"""certfleet's metrics as Prometheus scrapes them: names in base units with the conventional suffixes,
no label whose values grow with the fleet, error codes bounded, and the gauges computed at scrape
time rendering every series a dashboard draws, zeros included."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

import shared.metrics as metrics
from shared.enums import AlertCode, JobKind, Severity

#: Labels whose values are one per device, certificate, trustpoint or request: never on a metric.
FLEET_GROWING_LABELS = {"device", "device_id", "device_name", "serial", "trustpoint", "trustpoint_id",
                        "trustpoint_name", "certificate", "serial_number", "url", "path", "job_id", "batch_id",
                        "domain", "domain_id", "alert_id", "webhook", "webhook_id", "token", "name", "id"}
#: Units that are not Prometheus base units, as a name's last word(s).
NOT_BASE_UNITS = re.compile(r"_(milliseconds|microseconds|ms|us|minutes|hours|days|kilobytes|megabytes|kb|mb|"
                            r"percent)(_total|_bucket|_sum|_count)?$")


def full_snapshot() -> metrics.FleetSnapshot:
    return metrics.FleetSnapshot(
        {("available", "available"): 3}, {days: 1 for days in metrics.EXPIRY_WINDOWS_DAYS}, 1, 1.9e9,
        ca_bundle_version="2", ca_bundle_sha256="ab" * 32, ca_bundle_last_modified=1.8e9,
        schedule_last_runs={"renewal": 1.8e9},
    )


def defined_metrics() -> list[MetricWrapperBase]:
    return [value for value in vars(metrics).values() if isinstance(value, Counter | Gauge | Histogram)]


def scraped_families() -> list:
    """Every family certfleet's collectors render, with every optional one present."""
    families = list(metrics.FleetCollector(full_snapshot).collect())
    families += list(metrics.CaCircuitCollector(lambda: {"https://ca.example.net:443": True}).collect())
    return families


def check_name(name: str, kind: str) -> None:
    assert name.startswith("certfleet_"), name
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
    assert not NOT_BASE_UNITS.search(name), f"{name}: not in base units (seconds, bytes)"
    if kind == "counter":
        assert not name.endswith("_total"), f"{name}: prometheus_client adds _total to a counter"
    else:
        assert not name.endswith("_total"), f"{name}: only counters end in _total"
    if "timestamp" in name:
        assert name.endswith("_timestamp_seconds"), name


def check_labels(name: str, labels) -> None:
    growing = set(labels) & FLEET_GROWING_LABELS
    assert not growing, f"{name} has labels whose values grow with the fleet: {sorted(growing)}"


def test_every_defined_metric_is_named_in_base_units_with_its_suffix_and_bounded_labels():
    assert len(defined_metrics()) >= 15
    for metric in defined_metrics():
        check_name(metric._name, metric._type)
        check_labels(metric._name, metric._labelnames)
        if isinstance(metric, Histogram):
            assert metric._name.endswith(("_seconds", "_bytes")), f"{metric._name}: a histogram of what unit?"


def test_every_gauge_computed_at_scrape_time_is_named_and_labelled_alike():
    families = scraped_families()
    assert len(families) >= 15
    for family in families:
        check_name(family.name, family.type)
        for sample in family.samples:
            check_labels(family.name, sample.labels)


def test_the_checks_catch_a_bad_name_and_a_label_per_device():
    with pytest.raises(AssertionError, match="base units"):
        check_name("certfleet_enrollment_duration_milliseconds", "histogram")
    with pytest.raises(AssertionError, match="only counters"):
        check_name("certfleet_renewals_total", "gauge")
    with pytest.raises(AssertionError, match="_timestamp_seconds"):
        check_name("certfleet_last_run_timestamp", "gauge")
    with pytest.raises(AssertionError, match="grow with the fleet"):
        check_labels("certfleet_certificates_expiring", ["within_days", "serial"])


def test_error_codes_are_label_values_up_to_a_bound_then_other(monkeypatch):
    monkeypatch.setattr(metrics, "_codes_seen", set())
    assert metrics.bounded_code("ca_connection_refused") == "ca_connection_refused"
    assert metrics.bounded_code("device_http_404") == "device_http_404"
    # Free text a device might send, or nothing at all.
    for odd in ("", None, "Certificate of FTD-000042 expired", "x" * 65, "code-with-dashes"):
        assert metrics.bounded_code(odd) == "other"
    for i in range(metrics.MAX_CODES):
        metrics.bounded_code(f"invented_{i}")
    assert metrics.bounded_code("one_too_many") == "other"
    assert metrics.bounded_code("ca_connection_refused") == "ca_connection_refused"  # still itself


def render(collector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_fleet_gauges_have_every_series_a_dashboard_draws_from_the_first_scrape():
    """An empty fleet: every job kind and state, renewal method, and alert code and severity is a
    series at 0, so no panel is empty and rate()/max() see the first change."""
    empty = metrics.FleetSnapshot({}, {days: 0 for days in metrics.EXPIRY_WINDOWS_DAYS}, 0, None)
    text = render(metrics.FleetCollector(lambda: empty))
    for kind in JobKind:
        for state in ("queued", "running"):
            assert f'certfleet_jobs_unfinished{{kind="{kind.value}",state="{state}"}} 0.0' in text
        assert f'certfleet_jobs_oldest_queued_age_seconds{{kind="{kind.value}"}} 0.0' in text
    for method in metrics.RENEWAL_METHODS:
        for name in ("certfleet_renewals_in_progress", "certfleet_trustpoints_renewal_failed",
                     "certfleet_certificates_renewal_due"):
            assert f'{name}{{method="{method}"}} 0.0' in text
    for code in AlertCode:
        for severity in Severity:
            assert f'certfleet_alerts_active{{code="{code.value}",severity="{severity.value}"}} 0.0' in text
    # What a fleet without a CA bundle or certificates cannot say is left out, not made up.
    assert "certfleet_ca_bundle_version_info" not in text
    assert "certfleet_certificate_earliest_expiry_timestamp_seconds" not in text


def test_the_fleet_gauges_report_the_snapshot():
    snapshot = metrics.FleetSnapshot(
        {}, {}, 0, None, jobs_unfinished={("enroll", "queued"): 40, ("re_enroll", "running"): 2},
        oldest_queued_age={"enroll": 95.5}, renewals_in_progress={"est": 2}, renewals_failed={"scep": 3})
    text = render(metrics.FleetCollector(lambda: snapshot))
    assert 'certfleet_jobs_unfinished{kind="enroll",state="queued"} 40.0' in text
    assert 'certfleet_jobs_unfinished{kind="re_enroll",state="running"} 2.0' in text
    assert 'certfleet_jobs_oldest_queued_age_seconds{kind="enroll"} 95.5' in text
    assert 'certfleet_renewals_in_progress{method="est"} 2.0' in text
    assert 'certfleet_trustpoints_renewal_failed{method="scep"} 3.0' in text


def test_ca_circuits_are_one_series_per_endpoint():
    """(Read from the gate in Redis, and a gate that cannot be read: tests/integration/worker/test_ca_gate_redis.py.)"""
    text = render(metrics.CaCircuitCollector(lambda: {"https://ca-b:443": False, "https://[2001:db8::1]:8443": True}))
    assert 'certfleet_ca_circuit_open{endpoint="https://ca-b:443"} 0.0' in text
    assert 'certfleet_ca_circuit_open{endpoint="https://[2001:db8::1]:8443"} 1.0' in text
