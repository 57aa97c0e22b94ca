"""``certfleet enroll``: start a bulk enrollment through the API and follow it to the end.

    certfleet enroll --object vpn-est --all
    certfleet enroll --object vpn-est --device FTD-000001 edge-007 3f2c8e4a-…
    certfleet enroll --object vpn-est --name-pattern 'edge-*' --model 'FTD 3110' --domain Branch

Installs the enrollment object on the selected devices of the domain and its subdomains,
shows a progress bar (succeeded, failed, queued, running, and the controller's ETA) until
every job has ended, then a summary with the failures grouped by error code.

Exit status (services.cli.errors): 0 when every device enrolled; 1 when any failed, or the
request was refused (unknown object, device or domain, empty selection…), or the controller
cannot be reached; 2 for a bad command line (no or several selections, no token); 130 when
interrupted: the enrollment goes on without the command.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from services.cli.connection import add_api_arguments, connect
from services.cli.errors import CliError, Interrupted, UsageError
from services.cli.lookup import resolve_devices, resolve_domain
from shared.domains import GLOBAL_DOMAIN_ID

if TYPE_CHECKING:
    from services.cli.api_client import CertfleetClient


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--object", required=True, metavar="NAME",
                        help="name of the certificate enrollment object to install")
    add_selection_arguments(parser)
    add_follow_arguments(parser, what="the enrollment")


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """The device selection (checked by :func:`check_selection`) and ``--domain``."""
    which = parser.add_argument_group("device selection (one of --all, --device, or the filters)")
    which.add_argument("--all", action="store_true", help="every device of the domain and its subdomains")
    which.add_argument("--device", nargs="+", action="extend", default=[], metavar="DEVICE",
                       help="devices by id, name or serial (repeatable)")
    which.add_argument("--name-pattern", metavar="P", help="device names matching P ('*' and '?' wildcards)")
    which.add_argument("--model", metavar="M", help="devices of model M (combines with --name-pattern)")
    parser.add_argument("--domain", default=str(GLOBAL_DOMAIN_ID), metavar="DOMAIN",
                        help="domain by id or name (default Global)")


def add_follow_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """How a batch is followed, and the API's URL and token."""
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between progress polls")
    parser.add_argument("--no-wait", action="store_true", help=f"start {what} and exit")
    add_api_arguments(parser)


def check_selection(args: argparse.Namespace) -> None:
    """UsageError unless the command line chooses the devices exactly one way."""
    chosen = [name for name, given in (("--all", args.all), ("--device", bool(args.device)),
                                       ("--name-pattern/--model", bool(args.name_pattern or args.model)))
              if given]
    if len(chosen) != 1:
        raise UsageError("bad_selection", "choose the devices with exactly one of --all, --device DEVICE…, or "
                                          f"--name-pattern P and/or --model M (given: {', '.join(chosen) or 'none'})")


def selection_of(args: argparse.Namespace, device_ids: list[str]) -> dict:
    """The API's device selection for the command line's choice (checked by check_selection)."""
    if args.all:
        return {"all": True}
    if args.device:
        return {"device_ids": device_ids}
    selection = {}
    if args.name_pattern:
        selection["name_pattern"] = args.name_pattern
    if args.model:
        selection["model"] = args.model
    return selection


def resolve_object(client: CertfleetClient, name: str, *, domain_id: str) -> dict:
    objects = client.enrollment_objects(domain_id=domain_id)
    for obj in objects:
        if obj["name"] == name:
            return obj
    known = ", ".join(sorted(o["name"] for o in objects)) or "none"
    raise CliError("unknown_enrollment_object",
                   f"no enrollment object named {name!r} in this domain or its ancestors (available: {known}); "
                   "create it first or check --domain")


def summary(batch: dict, *, object_name: str, title: str = "bulk enrollment",
            skipped_because: str = "they already had it") -> list[str]:
    """What the operator reads at the end: the counts (the failures table follows)."""
    rate = batch["total"] / batch["elapsed_seconds"] if batch["elapsed_seconds"] else 0.0
    return [
        f"{title} {batch['id']}: {object_name} on {batch['selected']} selected devices, "
        f"{batch['skipped']} skipped ({skipped_because})",
        f"{batch['succeeded']} succeeded, {batch['failed']} failed of {batch['total']} "
        f"in {batch['elapsed_seconds']:.1f} s ({rate:.0f} per s)",
    ]


def follow_to_end(client: CertfleetClient, batch: dict, *, domain_id: str, console, interval: float,
                  title: str = "bulk enrollment", path: str = "bulk-enrollments", label: str = "enrolling",
                  fetch=None) -> dict:
    """The batch once every job has ended, drawn on a live bar meanwhile; Ctrl-C stops following
    (exit 130), not the batch."""
    from services.cli.progress import follow

    try:
        [batch] = follow(client, [batch], domain_id=domain_id, console=console, interval=interval, label=label,
                         fetch=fetch)
    except KeyboardInterrupt:
        raise Interrupted("interrupted", f"stopped following; {title} {batch['id']} goes on "
                                         f"(GET /api/v1/domains/{domain_id}/{path}/{batch['id']})") from None
    return batch


def report(batch: dict, lines: list[str], *, console, verb: str = "enroll") -> int:
    """Print the summary and the failures by error code; ``devices_failed`` when any device failed."""
    from services.cli.progress import failures_table

    for line in lines:
        console.print(line)
    table = failures_table([batch])
    if table is not None:
        console.print(table)
    if batch["failed"]:
        raise CliError("devices_failed", f"{batch['failed']} of {batch['total']} devices failed to {verb} "
                                         "(failures by error code above)")
    return 0


def main(args: argparse.Namespace) -> int:
    # Loaded when the command runs: `certfleet --help` and the other commands start faster without.
    from rich.console import Console

    check_selection(args)
    console = Console()
    with connect(args) as client:
        domain_id = resolve_domain(client, args.domain)
        obj = resolve_object(client, args.object, domain_id=domain_id)
        devices = resolve_devices(client, args.device, domain_id=domain_id) if args.device else []
        batch = client.start_bulk_enrollment(obj["id"], selection=selection_of(args, [d["id"] for d in devices]),
                                             domain_id=domain_id)
        console.print(f"started bulk enrollment {batch['id']}: {obj['name']} on {batch['total']} devices "
                      f"({batch['skipped']} skipped: they already had it)")
        if args.no_wait:
            return 0
        batch = follow_to_end(client, batch, domain_id=domain_id, console=console, interval=args.interval)
    return report(batch, summary(batch, object_name=obj["name"]), console=console)
