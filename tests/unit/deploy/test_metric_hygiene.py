"""The metric hygiene checker (tests/support/metric_hygiene.py) on /metrics pages made by
prometheus_client, as the services make theirs: it finds each kind of mistake, and passes the
metrics certfleet means to have."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from tests.support.metric_hygiene import MAX_SERIES, violations


def page(*define) -> str:
    """The /metrics page of a registry holding what each ``define(registry)`` makes."""
    registry = CollectorRegistry()
    for make in define:
        make(registry)
    return generate_latest(registry).decode()


def good(registry: CollectorRegistry) -> None:
    jobs = Counter("certfleet_jobs", "Jobs.", ["kind", "outcome"], registry=registry)
    for kind in ("enroll", "re_enroll", "bundle_update"):
        jobs.labels(kind=kind, outcome="failed").inc()
    Histogram("certfleet_enrollment_duration_seconds", "Durations.", ["method"], registry=registry).labels(
        method="est").observe(0.2)
    Gauge("certfleet_alerts_active", "Open alerts.", ["code", "severity"], registry=registry).labels(
        code="F0853", severity="critical").set(3)
    Gauge("certfleet_ca_gate_open", "Circuits.", ["endpoint"], registry=registry).labels(
        endpoint="https://ca.example.net:8443").set(1)
    Info("certfleet_ca_bundle_version", "The bundle.", registry=registry).info(
        {"version": "3", "sha256": "ab" * 32})
    Histogram("dramatiq_message_duration_milliseconds", "Dramatiq's own.", ["actor_name"],
              registry=registry).labels(actor_name="enroll_trustpoint").observe(12)


def test_the_metrics_certfleet_means_to_have_pass():
    assert violations(page(good), fleet_identifiers=["FTD-000042", "10.0.0.42"]) == []


def test_a_counter_without_total_is_found():
    text = "# HELP certfleet_renewals Renewals.\n# TYPE certfleet_renewals counter\ncertfleet_renewals 3.0\n"
    assert violations(text) == ["certfleet_renewals: a counter without _total"]


def test_durations_and_sizes_not_in_base_units_are_found():
    def made(registry):
        Histogram("certfleet_est_latency_ms", "x", registry=registry).observe(3)
        Gauge("certfleet_queue_age_minutes", "x", registry=registry).set(2)
        Gauge("certfleet_bundle_kilobytes", "x", registry=registry).set(2)
        Histogram("certfleet_push_duration", "x", registry=registry).observe(3)

    found = violations(page(made))
    assert found == [
        "certfleet_est_latency_ms: not in base units (ms; use _seconds or _bytes)",
        "certfleet_queue_age_minutes: not in base units (minutes; use _seconds or _bytes)",
        "certfleet_bundle_kilobytes: not in base units (kilobytes; use _seconds or _bytes)",
        "certfleet_push_duration: a duration without _seconds",
    ]


def test_a_metric_with_more_series_than_the_limit_is_found():
    def made(registry, count):
        errors = Counter("certfleet_job_retries", "x", ["code"], registry=registry)
        for i in range(count):
            errors.labels(code=f"code_{i}").inc()

    assert violations(page(lambda r: made(r, MAX_SERIES))) == []
    assert violations(page(lambda r: made(r, MAX_SERIES + 1))) == [
        f"certfleet_job_retries: {MAX_SERIES + 1} series (more than {MAX_SERIES}): an unbounded label"]


def test_histogram_buckets_are_one_series():
    def made(registry):
        histogram = Histogram("certfleet_enrollment_duration_seconds", "x", ["method"], registry=registry,
                              buckets=[i / 10 for i in range(1, MAX_SERIES)])
        histogram.labels(method="est").observe(1)

    assert violations(page(made)) == []


def test_label_values_naming_one_thing_of_the_fleet_are_found():
    def labelled(value):
        return lambda registry: Counter("certfleet_jobs", "x", ["where"], registry=registry).labels(where=value).inc()

    for value, reason in [
        (str(uuid.uuid4()), "a UUID"),
        ("https://ca.example.net/.well-known/est/vpn/simpleenroll", "a URL with a path"),
        ("5F:3A:00:91:C4:22:7B:E0:11", "a serial number or digest"),
        ("0x1f3a0091c4227be011aa", "a serial number or digest"),
        ("FTD-000042", "a serial or numbered name"),
        ("ftd-000042", "a serial or numbered name"),
        ("edge 10.0.0.42", "an identifier of the fleet"),
    ]:
        assert violations(page(labelled(value)), fleet_identifiers=["10.0.0.42"]) == [
            f"certfleet_jobs{{where={value!r}}}: a label value that is {reason}"], value


def test_bounded_label_values_pass():
    def made(registry):
        counter = Counter("certfleet_things", "x", ["value"], registry=registry)
        for value in ("F0853", "CF-CERT-EXPIRING", "https://ca.example.net:8443", "127.0.0.1:8443", "self_signed",
                      "certfleet-bulk.DQ", "3.11.2"):
            counter.labels(value=value).inc()

    assert violations(page(made), fleet_identifiers=["FTD-000042"]) == []
