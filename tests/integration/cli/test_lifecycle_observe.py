"""What ``certfleet demo --lifecycle`` reads of the fleet at each moment, from a real database
(SQLite): renewals counted, and a renewal that keeps failing said with its error."""

from __future__ import annotations

from datetime import UTC, datetime

from services.cli.lifecycle import observe
from tests.support import alert_rows as rows


def test_a_failing_renewal_is_counted_with_one_of_its_errors(sqlite_engine):
    renewed = rows.trustpoint(sqlite_engine, rows.device(sqlite_engine, "ftd-1"),
                              last_renewal_at=datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    rows.trustpoint(sqlite_engine, rows.device(sqlite_engine, "ftd-2"))
    assert observe(sqlite_engine, bundle_version="").renewals_failing == 0

    rows.trustpoint(sqlite_engine, rows.device(sqlite_engine, "ftd-3"), renewal_failures=2,
                    renewal_error_code="ca_refused", renewal_error_message="the CA refused the request: expired")
    seen = observe(sqlite_engine, bundle_version="")
    assert (seen.devices, seen.trustpoints, seen.renewed) == (3, 3, 1)
    assert seen.first_renewal is not None and seen.first_renewal.replace(tzinfo=UTC) == renewed.last_renewal_at
    assert seen.renewals_failing == 1
    assert seen.renewal_error == "ca_refused: the CA refused the request: expired"
