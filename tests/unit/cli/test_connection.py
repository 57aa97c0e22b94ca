"""What a command checks before it talks to the controller: a usable URL and a token."""

from __future__ import annotations

import argparse

import pytest

from services.cli.connection import check_api_url, connect
from services.cli.errors import UsageError


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "https://certfleet.example.com/", "http://[::1]:8000"])
def test_http_urls_with_a_host_are_accepted(url):
    assert check_api_url(url) == url


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://certfleet.example.com", "http://", "http://[::1", ""])
def test_anything_else_is_a_usage_error_with_an_example(url):
    with pytest.raises(UsageError) as refused:
        check_api_url(url)
    assert refused.value.code == "bad_api_url" and refused.value.exit_status == 2
    assert "--api-url" in refused.value.message and "http://127.0.0.1:8000" in refused.value.message


def test_no_token_says_how_to_get_one():
    with pytest.raises(UsageError) as refused:
        connect(argparse.Namespace(api_url="http://127.0.0.1:8000", token=""))
    assert refused.value.code == "no_token" and refused.value.exit_status == 2
    assert "certfleet token create --role admin" in refused.value.message
