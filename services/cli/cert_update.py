"""``certfleet cert-update`` and ``certfleet show cert-update``: certfleet's CA bundle, as the
management center's CLI has it, with its messages word for word.

    certfleet cert-update test
    certfleet cert-update run-now [--force | force]
    certfleet cert-update auto-update enable|disable
    certfleet show cert-update

Exit status: 0 on success; 1 when the test fails, the update is refused (connection checks
failed without --force) or the bundle source is unreachable or its bundle invalid; 2 for a bad
command line. ``--json`` prints the API's answer instead, for scripts (same exit status).
"""

from __future__ import annotations

import argparse
import json

from services.cli.connection import add_api_arguments, connect


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="cert_update_action", required=True)
    test = actions.add_parser("test", help="compare the CA bundle with the latest; check connections if out of date")
    _common(test)
    test.set_defaults(func=_test)
    run_now = actions.add_parser("run-now", help="replace the CA bundle with the latest now")
    run_now.add_argument("--force", action="store_true",
                         help="replace even if connection checks fail (e.g. IPv6-only, IPv4-only bundle server)")
    run_now.add_argument("keyword", nargs="?", choices=["force"], help="the same as --force")
    _common(run_now)
    run_now.set_defaults(func=_run_now)
    auto = actions.add_parser("auto-update", help="switch the daily automatic update on or off")
    auto.add_argument("switch", choices=["enable", "disable"])
    _common(auto)
    auto.set_defaults(func=_auto_update)


def main(args: argparse.Namespace) -> int:  # each subcommand sets its own func
    return args.func(args)


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    things = parser.add_subparsers(dest="show_what", required=True)
    cert_update = things.add_parser("cert-update", help="the automatic CA-bundle update and the bundle's last change")
    _common(cert_update)
    cert_update.set_defaults(func=_show)


def _print_result(args: argparse.Namespace, result: dict) -> int:
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(result["message"])
    return 0 if result["ok"] else 1


def _test(args: argparse.Namespace) -> int:
    with connect(args) as client:
        return _print_result(args, client.cert_update_test())


def _run_now(args: argparse.Namespace) -> int:
    with connect(args) as client:
        return _print_result(args, client.cert_update_run_now(force=args.force or args.keyword == "force"))


def _auto_update(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.cert_update_auto(enabled=args.switch == "enable")
    print(json.dumps(status, indent=2) if args.json else status["schedule"])
    return 0


def _show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.cert_update_status()
    print(json.dumps(status, indent=2) if args.json else f"{status['schedule']}\n{status['last_modified_message']}")
    return 0
