"""``certfleet devices import``: register a fleet's devices in a domain, from the inventory a
device simulator (or anything answering like it) publishes."""

from __future__ import annotations

import argparse

from services.cli.connection import add_api_arguments, connect
from services.cli.lookup import resolve_domain
from shared.domains import GLOBAL_DOMAIN_ID


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-sim", required=True, metavar="URL", help="device simulator URL")
    parser.add_argument("--domain", default=str(GLOBAL_DOMAIN_ID), metavar="DOMAIN",
                        help="domain by id or name (default Global)")
    add_api_arguments(parser)


def import_devices(args: argparse.Namespace) -> int:
    with connect(args) as client:
        result = client.import_devices(args.from_sim, domain_id=resolve_domain(client, args.domain))
    print(f"imported {result['imported']} devices, skipped {result['skipped']} already known")
    return 0
