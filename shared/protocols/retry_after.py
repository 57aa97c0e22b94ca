"""HTTP's Retry-After header (RFC 9110 section 10.2.3) as seconds to wait. Pure: the time the
answer arrived is passed in, so an HTTP date gives the same wait in any test.

The header is either delta-seconds (digits only: ``120``) or an HTTP date, in any of the three
forms RFC 9110 section 5.6.7 asks a recipient to read::

    Sun, 06 Nov 1994 08:49:37 GMT     IMF-fixdate, the one servers send today
    Sunday, 06-Nov-94 08:49:37 GMT    obsolete RFC 850 form (two-digit year)
    Sun Nov  6 08:49:37 1994          obsolete asctime() form

The parse is strict: names and separators as the grammar spells them, a real calendar date.
Anything else (a fraction, a sign, words, a date in another format) is None, and the caller
falls back on its own backoff. A date in the past means "now" (0); a wait longer than
``cap`` seconds is cut to ``cap``, so a peer cannot park a client for days.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

#: The longest wait a Retry-After may ask for; longer ones are cut to this.
MAX_RETRY_AFTER = 3600.0

_DAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_LONG_DAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = "|".join(_MONTH_NAMES)
_TIME = r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"

_IMF_FIXDATE = re.compile(
    rf"(?:{_DAYS}), (?P<day>\d{{2}}) (?P<month>{_MONTHS}) (?P<year>\d{{4}}) {_TIME} GMT", re.ASCII)
_RFC850 = re.compile(
    rf"(?:{_LONG_DAYS}), (?P<day>\d{{2}})-(?P<month>{_MONTHS})-(?P<year>\d{{2}}) {_TIME} GMT", re.ASCII)
_ASCTIME = re.compile(
    rf"(?:{_DAYS}) (?P<month>{_MONTHS}) (?P<day>[ \d]\d) {_TIME} (?P<year>\d{{4}})", re.ASCII)
#: ASCII digits only: ``\d`` alone would take other scripts' digits, which float() reads too.
_DELTA_SECONDS = re.compile(r"\d+", re.ASCII)


def parse_retry_after(value: str | None, *, now: datetime, cap: float = MAX_RETRY_AFTER) -> float | None:
    """Seconds from ``now`` (timezone-aware) that ``value`` asks to wait, from 0 to ``cap``;
    None for a missing, empty or malformed header."""
    text = (value or "").strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), cap)  # a hundred digits is a float too: simply cut to the cap
    when = parse_http_date(text, now=now)
    if when is None:
        return None
    return min(max((when - now).total_seconds(), 0.0), cap)


def parse_http_date(text: str, *, now: datetime) -> datetime | None:
    """An HTTP date as an aware UTC datetime, or None. ``now`` places a two-digit RFC 850 year:
    the year ending in those digits that lies at most 50 years ahead of ``now``, else the one a
    century earlier."""
    for pattern in (_IMF_FIXDATE, _RFC850, _ASCTIME):
        match = pattern.fullmatch(text)
        if match is not None:
            break
    else:
        return None
    year = int(match["year"])
    if pattern is _RFC850:
        year = now.year + (year - now.year) % 100  # the first year from now on that ends so
        if year > now.year + 50:
            year -= 100
    try:
        return datetime(year, _MONTH_NAMES.index(match["month"]) + 1, int(match["day"].strip()),
                        int(match["hour"]), int(match["minute"]),
                        min(int(match["second"]), 59),  # a leap second, 60, counts as 59
                        tzinfo=UTC)
    except ValueError:  # 31 Feb, hour 25 and the like
        return None
