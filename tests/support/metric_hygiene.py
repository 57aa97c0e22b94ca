"""Metric hygiene: what a service's ``/metrics`` page must not hold, as a pure check of the page's
text (Prometheus exposition format 0.0.4).

- no metric with more than :data:`MAX_SERIES` series (label sets, histogram buckets aside): a label
  whose values are not a small fixed set makes every dashboard and rule over it slower as the
  fleet, or merely time, grows;
- no label value that names one thing of the fleet: a UUID, a serial or digest, a URL with a path,
  or any identifier the caller knows the fleet by (device names, serials, addresses, ids);
- counters end in ``_total``; durations and sizes are in base units (``_seconds``, ``_bytes``),
  never milliseconds, minutes, kilobytes and the like.

A few metrics come from libraries certfleet cannot rename; each allowed break of a rule is listed
below with its reason, and nothing else is.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

#: Series per metric above which a label is taken to be unbounded. The fleet's own series are a
#: fixed set (statuses, methods, outcomes, codes); growth with devices, jobs or time shows far sooner.
MAX_SERIES = 200

#: Metrics whose names break the unit rule, and why they may.
FOREIGN_UNITS = {
    "dramatiq_message_duration_milliseconds": "named by Dramatiq's Prometheus middleware, which certfleet runs "
                                              "unchanged; its dashboards divide by 1000",
}
#: (metric, label) pairs whose values may look like identifiers, and why.
ID_LIKE_LABELS = {
    ("certfleet_ca_bundle_version_info", "sha256"): "an info metric: one series, the digest of the one CA "
                                                    "bundle installed",
}

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
#: A certificate serial or a digest: 16 hex digits or more, colons allowed between the bytes.
_HEX_ID = re.compile(r"^(?:0x)?(?:[0-9a-f]{2}:?){8,}$", re.IGNORECASE)
#: Two letters or more, then 5 digits or more: a device serial (FTD-000042), a numbered host name
#: (ftd-000042). A fault code (F0853) is not one.
_SERIAL = re.compile(r"^[a-z]{2,}[-_]?\d{5,}$", re.IGNORECASE)
_URL_WITH_PATH = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s]+/[^\s]+", re.IGNORECASE)
_NOT_BASE_UNITS = {
    "milliseconds", "millis", "ms", "microseconds", "us", "nanoseconds", "ns", "minutes", "hours", "days",
    "kilobytes", "megabytes", "gigabytes", "kb", "mb", "gb", "kib", "mib", "gib", "bits",
}
_DURATION_WORDS = {"duration", "latency", "elapsed", "age"}
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
# ``X_created`` (prometheus_client: when each series of X began) has X's labels: X is checked.


def _series_key(labels: dict[str, str]) -> frozenset:
    return frozenset((k, v) for k, v in labels.items() if k not in ("le", "quantile"))


def violations(page: str, *, fleet_identifiers: Iterable[str] = ()) -> list[str]:
    """What is wrong with one ``/metrics`` page, one line each ('' metrics: none)."""
    found = []
    for name, kind in _TYPE_LINE.findall(page):
        if name.endswith("_created"):
            continue
        if kind == "counter" and not name.endswith("_total"):
            found.append(f"{name}: a counter without _total")
        words = set(name.split("_"))
        if name not in FOREIGN_UNITS:
            if bad := sorted(words & _NOT_BASE_UNITS):
                found.append(f"{name}: not in base units ({', '.join(bad)}; use _seconds or _bytes)")
            elif words & _DURATION_WORDS and "seconds" not in words:
                found.append(f"{name}: a duration without _seconds")
    identifiers = {i for i in fleet_identifiers if i}
    for family in text_string_to_metric_families(page):
        if family.name.endswith("_created"):
            continue
        series = {_series_key(sample.labels) for sample in family.samples}
        if len(series) > MAX_SERIES:
            found.append(f"{family.name}: {len(series)} series (more than {MAX_SERIES}): an unbounded label")
        per_label: dict[str, set[str]] = defaultdict(set)
        for sample in family.samples:
            for label, value in sample.labels.items():
                per_label[label].add(value)
        for label, values in sorted(per_label.items()):
            if label in ("le", "quantile") or (_family_name(family), label) in ID_LIKE_LABELS:
                continue
            for value in sorted(values):
                if reason := _identifier_like(value, identifiers):
                    found.append(f"{family.name}{{{label}={value!r}}}: a label value that is {reason}")
                    break
    return found


def _family_name(family) -> str:
    """The name the family's samples carry (an info metric's ``_info``, a counter's ``_total``)."""
    return family.name + {"info": "_info", "counter": "_total"}.get(family.type, "")


def _identifier_like(value: str, identifiers: set[str]) -> str:
    if _UUID.search(value):
        return "a UUID"
    if _URL_WITH_PATH.match(value):
        return "a URL with a path"
    if _HEX_ID.match(value):
        return "a serial number or digest"
    if _SERIAL.match(value):
        return "a serial or numbered name"
    if any(identifier in value for identifier in identifiers):
        return "an identifier of the fleet"
    return ""
