"""How a command reaches the controller: ``--api-url`` and ``--token`` (or ``CERTFLEET_API_URL``
and ``CERTFLEET_TOKEN``), checked before the first request."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from services.cli.errors import UsageError

if TYPE_CHECKING:
    from services.cli.api_client import CertfleetClient

DEFAULT_API_URL = "http://127.0.0.1:8000"


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", default=os.environ.get("CERTFLEET_API_URL", DEFAULT_API_URL),
                        help="controller URL (env CERTFLEET_API_URL)")
    parser.add_argument("--token", default=os.environ.get("CERTFLEET_TOKEN", ""),
                        help="API token (env CERTFLEET_TOKEN)")


def check_api_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host; UsageError otherwise."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError("bad_api_url", f"{url!r} is not an http:// or https:// URL with a host; pass "
                                        f"--api-url (or set CERTFLEET_API_URL), e.g. {DEFAULT_API_URL}")
    return url


def connect(args: argparse.Namespace) -> CertfleetClient:
    """A client for the controller the command line names (close it, or use it in ``with``)."""
    from services.cli.api_client import CertfleetClient

    check_api_url(args.api_url)
    if not args.token:
        raise UsageError("no_token", "no API token: pass --token or set CERTFLEET_TOKEN (an administrator "
                                     "creates one with: certfleet token create --role admin)")
    return CertfleetClient(args.api_url, args.token)
