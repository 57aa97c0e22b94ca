"""Retry-After as seconds to wait: delta-seconds and the three HTTP date forms, relative to the
time the answer arrived, kept between 0 and the cap; anything malformed is None."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.protocols.retry_after import MAX_RETRY_AFTER, parse_http_date, parse_retry_after

#: A Wednesday.
NOW = datetime(2030, 1, 2, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("header", "seconds"), [
    # delta-seconds
    ("0", 0.0),
    ("120", 120.0),
    ("  7 ", 7.0),
    ("007", 7.0),
    ("3600", 3600.0),
    ("3601", MAX_RETRY_AFTER),
    ("99999999999", MAX_RETRY_AFTER),
    ("9" * 400, MAX_RETRY_AFTER),
    # IMF-fixdate
    ("Wed, 02 Jan 2030 12:00:30 GMT", 30.0),
    ("Wed, 02 Jan 2030 12:00:00 GMT", 0.0),
    ("Wed, 02 Jan 2030 12:30:00 GMT", 1800.0),
    ("Fri, 01 Feb 2030 12:00:00 GMT", MAX_RETRY_AFTER),
    ("Tue, 01 Jan 2030 12:00:00 GMT", 0.0),  # in the past: ask again now
    ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
    ("Wed, 02 Jan 2030 12:00:60 GMT", 59.0),  # a leap second
    # RFC 850, two-digit year
    ("Wednesday, 02-Jan-30 12:01:00 GMT", 60.0),
    ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0),  # 1994, not 2094: more than 50 years ahead
    # asctime, day padded with a space or a zero
    ("Wed Jan  2 12:00:45 2030", 45.0),
    ("Wed Jan 02 12:00:45 2030", 45.0),
])
def test_what_the_header_asks_for(header, seconds):
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize("header", [
    None,
    "",
    "   ",
    "-5",  # negative
    "+5",
    "1.5",  # delta-seconds has no fraction
    "1e3",
    "ten",
    "soon",
    "5 seconds",
    "0x10",
    "\u0661\u0662\u0660",  # Arabic-Indic digits: float() would read 120
    "Wed, 02 Jan 2030 12:00:30",  # no zone
    "Wed, 02 Jan 2030 12:00:30 UTC",
    "Wed, 02 Jan 2030 12:00:30 +0000",
    "wed, 02 jan 2030 12:00:30 GMT",  # names are case-sensitive
    "Wed, 2 Jan 2030 12:00:30 GMT",
    "Wed, 31 Feb 2030 12:00:30 GMT",  # no such day
    "Wed, 02 Jan 2030 25:00:00 GMT",
    "Wednesday, 02-Jan-2030 12:01:00 GMT",
    "Wed, 02-Jan-30 12:01:00 GMT",
    "2030-01-02T12:00:30Z",
    "Wed Jan  2 12:00:45 2030 GMT",
])
def test_a_malformed_header_is_none(header):
    assert parse_retry_after(header, now=NOW) is None


def test_the_cap_is_the_caller_s():
    assert parse_retry_after("600", now=NOW, cap=60) == 60
    assert parse_retry_after("Wed, 02 Jan 2030 12:05:00 GMT", now=NOW, cap=60) == 60
    assert parse_retry_after("30", now=NOW, cap=60) == 30


def test_an_http_date_is_measured_from_the_injected_now():
    header = "Wed, 02 Jan 2030 12:10:00 GMT"
    assert parse_retry_after(header, now=NOW) == 600
    assert parse_retry_after(header, now=datetime(2030, 1, 2, 12, 9, 0, tzinfo=UTC)) == 60
    assert parse_retry_after(header, now=datetime(2030, 1, 2, 12, 11, 0, tzinfo=UTC)) == 0


@pytest.mark.parametrize(("now_year", "two_digits", "year"), [
    (2030, "30", 2030),
    (2030, "80", 2080),  # exactly 50 years ahead: still this century
    (2030, "81", 1981),
    (2030, "99", 1999),
    (2099, "05", 2105),
    (2099, "48", 2148),  # 49 years ahead
    (2099, "50", 2050),  # 2150 would be 51 years ahead
])
def test_an_rfc850_two_digit_year_is_at_most_50_years_ahead(now_year, two_digits, year):
    now = datetime(now_year, 6, 1, tzinfo=UTC)
    parsed = parse_http_date(f"Monday, 07-Jan-{two_digits} 00:00:00 GMT", now=now)
    assert parsed == datetime(year, 1, 7, tzinfo=UTC)
