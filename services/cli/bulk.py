"""``certfleet re-enroll|refresh|delete`` and ``certfleet weak-crypto enable|disable``: one action
over a selection of devices, through the API's bulk actions.

    certfleet re-enroll --object vpn-est --all --expiring-within 30d
    certfleet refresh --object vpn-est --name-pattern 'edge-*' --status failed
    certfleet delete --object vpn-est --device FTD-000001 edge-007 --yes
    certfleet weak-crypto enable --model 'FTD 3110' --yes

The action applies to the trustpoints of the enrollment object ``--object`` (the trustpoint has
its name) on the selected devices of the domain and its subdomains, optionally only those whose
identity certificate ends within ``--expiring-within`` days or has status ``--status``. It is
followed as ``certfleet enroll`` follows an enrollment: a live progress bar, then a summary with
the failures by error code. Trustpoints busy with another job are skipped and counted.

``delete`` and ``weak-crypto enable`` ask for confirmation at the terminal unless ``--yes``;
without a terminal to ask at, they refuse (exit 2). Otherwise the exit status is ``certfleet
enroll``'s (services.cli.errors).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from services.cli.connection import add_api_arguments, connect
from services.cli.enroll import (
    add_follow_arguments,
    add_selection_arguments,
    check_selection,
    follow_to_end,
    report,
    resolve_object,
    selection_of,
    summary,
)
from services.cli.errors import ApiError, CliError, UsageError
from services.cli.lookup import resolve_devices, resolve_domain
from services.cli.operator import WEAK_CRYPTO_WARNING
from shared.states import Status

#: Command name -> (the API's action, the bar's label, the verb of the failure message).
ACTIONS = {
    "re-enroll": ("re_enroll", "re-enrolling", "re-enroll"),
    "refresh": ("refresh", "refreshing", "refresh"),
    "delete": ("delete", "deleting", "delete"),
}


def days(text: str) -> int:
    """``30d`` or ``30``: a number of days."""
    match = re.fullmatch(r"(\d{1,5})d?", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days, e.g. 30d")
    return int(match.group(1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--object", required=True, metavar="NAME",
                        help="the enrollment object whose trustpoints to act on (the trustpoints have its name)")
    add_selection_arguments(parser)
    filters = parser.add_argument_group("trustpoint filters (optional; all given must match)")
    filters.add_argument("--expiring-within", type=days, metavar="DAYS",
                         help="identity certificate ending within DAYS (30d or 30), or ended already")
    filters.add_argument("--status", choices=[s.value for s in Status], help="identity certificate status")
    add_follow_arguments(parser, what="the action")


def add_delete_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser)
    parser.add_argument("--yes", action="store_true", help="delete without asking for confirmation")


def add_weak_crypto_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_arguments(parser)
    parser.add_argument("--yes", action="store_true", help="enable without asking for confirmation")
    add_api_arguments(parser)


def re_enroll(args: argparse.Namespace) -> int:
    return _act(args, "re-enroll")


def refresh(args: argparse.Namespace) -> int:
    return _act(args, "refresh")


def delete(args: argparse.Namespace) -> int:
    return _act(args, "delete")


def weak_crypto_enable(args: argparse.Namespace) -> int:
    return _weak_crypto(args, enable=True)


def weak_crypto_disable(args: argparse.Namespace) -> int:
    return _weak_crypto(args, enable=False)


def confirmed(send: Callable[[bool], dict], *, yes: bool, warning: Callable[[ApiError], str], refused: str) -> dict:
    """``send(confirm)``'s answer. With ``yes`` it is sent confirmed; otherwise unconfirmed first,
    and when the API asks for confirmation (saying how many devices it would touch) the operator
    is asked at the terminal, or told to pass --yes when there is none."""
    if yes:
        return send(True)
    try:
        return send(False)
    except ApiError as exc:
        if exc.status != 409 or not exc.code.endswith("_confirmation_required"):
            raise
        text = warning(exc)
    if not sys.stdin.isatty():
        raise UsageError("confirmation_required", f"{text} Confirm at a terminal, or pass --yes.")
    print(text)
    try:
        answer = input("Go ahead? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("not_confirmed", refused)
    return send(True)


def _filters(args: argparse.Namespace) -> dict:
    filters = {}
    if args.expiring_within is not None:
        filters["expiring_within_days"] = args.expiring_within
    if args.status:
        filters["identity_status"] = args.status
    return filters


def _warning(name: str, trustpoint: str, count: int | None) -> str:
    where = f"{count} devices" if count is not None else "the selected devices"
    if name == "delete":
        return (f"This deletes trustpoint {trustpoint} and its certificates from {where}, on the devices and in "
                "certfleet.")
    return f"This runs {name} of trustpoint {trustpoint} on {where}."


def _act(args: argparse.Namespace, name: str) -> int:
    # Loaded when the command runs: `certfleet --help` and the other commands start faster without.
    from rich.console import Console

    action, label, verb = ACTIONS[name]
    check_selection(args)
    console = Console()
    with connect(args) as client:
        domain_id = resolve_domain(client, args.domain)
        obj = resolve_object(client, args.object, domain_id=domain_id)
        devices = resolve_devices(client, args.device, domain_id=domain_id) if args.device else []
        selection = selection_of(args, [d["id"] for d in devices])
        batch = confirmed(
            lambda confirm: client.start_bulk_action(action, obj["id"], selection=selection, filters=_filters(args),
                                                     confirm=confirm, domain_id=domain_id),
            yes=getattr(args, "yes", False),
            warning=lambda exc: _warning(name, obj["name"], exc.extra.get("selected")),
            refused=f"nothing done: trustpoint {obj['name']} left as it was",
        )
        console.print(f"started bulk {name} {batch['id']}: trustpoint {obj['name']} on {batch['total']} devices "
                      f"({batch['skipped']} skipped: busy with another job)")
        if args.no_wait:
            return 0
        batch = follow_to_end(client, batch, domain_id=domain_id, console=console, interval=args.interval,
                              title=f"bulk {name}", path="bulk-actions", label=label, fetch=client.bulk_action)
    lines = summary(batch, object_name=f"trustpoint {obj['name']}", title=f"bulk {name}",
                    skipped_because="busy with another job")
    return report(batch, lines, console=console, verb=verb)


def _weak_crypto(args: argparse.Namespace, *, enable: bool) -> int:
    check_selection(args)
    with connect(args) as client:
        domain_id = resolve_domain(client, args.domain)
        devices = resolve_devices(client, args.device, domain_id=domain_id) if args.device else []
        selection = selection_of(args, [d["id"] for d in devices])
        result = confirmed(
            lambda confirm: client.bulk_weak_crypto(enable, selection=selection, confirm=confirm,
                                                    domain_id=domain_id),
            yes=args.yes,
            warning=lambda exc: WEAK_CRYPTO_WARNING.format(device=f"{exc.extra.get('devices', 'the')} devices"),
            refused="weak-crypto left as it was on every device",
        )
    state = "enabled" if enable else "disabled"
    print(f"weak-crypto {state} on {result['changed']} devices ({result['selected'] - result['changed']} of the "
          f"{result['selected']} selected had it {state} already)")
    if enable and result["changed"]:
        print("re-enroll their trustpoints refused for weak crypto, e.g. "
              "certfleet re-enroll --object NAME --status failed …")
    return 0
