"""The patterns the OpenAPI document gives for URLs and cron expressions name only values the API
takes: a client that follows them is never refused (schemathesis generates from them too)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from services.controller.api.schemas.schedules import CRON_PATTERN
from services.controller.rules.checks import (
    FQDN_PATTERN,
    HTTP_URL_PATTERN,
    IP_ADDRESS_PATTERN,
    check_fqdn,
    check_http_url,
    check_ip_address,
    url_pattern,
)
from services.controller.scheduling.timing import Timing

CHECKED = settings(max_examples=150, derandomize=True, database=None, deadline=None)


@CHECKED
@given(st.from_regex(HTTP_URL_PATTERN, fullmatch=True))
def test_every_url_the_document_allows_passes_the_check(url):
    assert check_http_url(url, field="url") == url


@CHECKED
@given(st.from_regex(url_pattern(query=False), fullmatch=True))
def test_a_base_url_has_no_query_or_fragment(url):
    assert check_http_url(url, field="inventory_url") == url and "?" not in url and "#" not in url


@CHECKED
@given(st.from_regex(FQDN_PATTERN, fullmatch=True), st.from_regex(IP_ADDRESS_PATTERN, fullmatch=True))
def test_every_host_name_and_address_the_document_allows_passes_the_check(fqdn, address):
    assert check_fqdn(fqdn) == fqdn
    check_ip_address(address)


@CHECKED
@given(st.from_regex(CRON_PATTERN, fullmatch=True))
def test_every_cron_expression_the_document_allows_runs(cron):
    timing = Timing(cron=cron)
    assert timing.next_after(datetime(2026, 1, 1, tzinfo=UTC)) > datetime(2026, 1, 1, tzinfo=UTC)


def test_the_urls_operators_write_are_allowed():
    for url in ("https://ca.example.com/", "https://[2001:db8::5]:8443/.well-known/est/ios/",
                "http://127.0.0.1:8400/api/devices/FTD-000001", "http://[::1]:8080/scep?x=1#top",
                "https://dm.example.net"):
        assert re.match(HTTP_URL_PATTERN, url), url
    for url in ("0", "", "ftp://a.example/", "https://user:pw@ca.example.com/", "https://a.example/ b",
                "http://300.1.1.1/"):
        assert not re.match(HTTP_URL_PATTERN, url), url
    assert not re.match(url_pattern(query=False), "https://dm.example.net/?page=2")
