"""``certfleet endpoints``: the installation's allow-list of device management endpoints (changes need
an admin homed at Global). A device whose management URL matches an entry gets secrets (EST
passwords, SCEP challenges, PKCS#12 files) once it proves it holds its credential, even if no admin
approved it.

    certfleet endpoints list [--json]
    certfleet endpoints allow https 10.20.0.0/16 [--port 443] [--description TEXT]
    certfleet endpoints allow http fw-mgmt.example.net
    certfleet endpoints remove ID
"""

from __future__ import annotations

import argparse
import json

from services.cli.connection import add_api_arguments, connect


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_arguments(parser)


def add_allow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scheme", choices=["http", "https"], help="how certfleet reaches the devices")
    parser.add_argument("host", help="a host name (matched exactly, never resolved) or an IP address or network in "
                                     "CIDR notation, e.g. 10.20.0.0/16 or 2001:db8:40::/48")
    parser.add_argument("--port", type=int, default=None, help="only this port (default: any port)")
    parser.add_argument("--description", default="", help="what the entry is for")
    add_api_arguments(parser)


def add_remove_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the entry's id, as `certfleet endpoints list` shows it")
    add_api_arguments(parser)


def describe(entry: dict) -> str:
    port = f" port {entry['port']}" if entry["port"] else " any port"
    return f"{entry['scheme']}://{entry['host']}{port}"


def list_endpoints(args: argparse.Namespace) -> int:
    with connect(args) as client:
        entries = client.management_endpoints()
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("no management endpoint is allowed: only devices an admin approved get secrets")
        return 0
    header = ("ID", "SCHEME", "HOST", "PORT", "ADDED BY", "DESCRIPTION")
    rows = [(e["id"], e["scheme"], e["host"], str(e["port"] or "any"), e["created_by"], e["description"])
            for e in entries]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def allow(args: argparse.Namespace) -> int:
    with connect(args) as client:
        entry = client.allow_management_endpoint(args.scheme, args.host, port=args.port,
                                                 description=args.description)
    print(f"allowed {describe(entry)} (entry {entry['id']})")
    return 0


def remove(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.remove_management_endpoint(args.id)
    print(f"removed entry {args.id}: devices it alone trusted get no secret from their next job on")
    return 0
