"""``certfleet enroll``: start a bulk enrollment through the API and follow it to the end.

    certfleet enroll --object vpn-est --all
    certfleet enroll --object vpn-est --device FTD-000001 edge-007 3f2c8e4a-…
    certfleet enroll --object vpn-est --name-pattern 'edge-*' --model 'FTD 3110' --domain Branch

Installs the enrollment object on the selected devices of the domain and its subdomains,
shows a progress bar (succeeded, failed, queued, running, and the controller's ETA) until
every job has ended, then a summary with the failures grouped by error code.

Exit status: 0 when every device enrolled, 1 when any failed, 2 when the request was refused
(unknown object, device or domain, empty selection, no token…) or the controller cannot be
reached, 130 when interrupted: the enrollment goes on without the command.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli.api_client import ApiError, CertfleetClient
from shared.models import GLOBAL_DOMAIN_ID

EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 1, 2, 130
#: How long the progress bar waits out a controller that stopped answering before giving up.
UNREACHABLE_PATIENCE_S = 60.0


class CannotStart(Exception):
    """The command cannot start: the message says what to change."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--object", required=True, metavar="NAME",
                        help="name of the certificate enrollment object to install")
    which = parser.add_argument_group("device selection (one of --all, --device, or the filters)")
    which.add_argument("--all", action="store_true", help="every device of the domain and its subdomains")
    which.add_argument("--device", nargs="+", action="extend", default=[], metavar="ID_OR_NAME",
                       help="devices by id, name or serial (repeatable)")
    which.add_argument("--name-pattern", metavar="P", help="device names matching P ('*' and '?' wildcards)")
    which.add_argument("--model", metavar="M", help="devices of model M (combines with --name-pattern)")
    parser.add_argument("--domain", default=str(GLOBAL_DOMAIN_ID), metavar="ID_OR_NAME",
                        help="domain by id or name (default Global)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between progress polls")
    parser.add_argument("--no-wait", action="store_true", help="start the enrollment and exit")


def selection_of(args: argparse.Namespace, device_ids: list[str]) -> dict:
    """The API's device selection for the command line's choice; CannotStart unless exactly one."""
    chosen = [name for name, given in (("--all", args.all), ("--device", bool(args.device)),
                                       ("--name-pattern/--model", bool(args.name_pattern or args.model)))
              if given]
    if len(chosen) != 1:
        raise CannotStart("choose the devices with exactly one of --all, --device ID_OR_NAME…, or "
                      f"--name-pattern P and/or --model M (given: {', '.join(chosen) or 'none'})")
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


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def resolve_domain(client: CertfleetClient, value: str) -> str:
    if _is_uuid(value):
        return value
    domains = client.domains()
    matches = [d for d in domains if d["name"] == value]
    if len(matches) != 1:
        known = ", ".join(sorted(d["name"] for d in domains))
        problem = "no domain" if not matches else f"{len(matches)} domains"
        raise CannotStart(f"{problem} named {value!r}; give the domain's id instead (domains: {known})")
    return matches[0]["id"]


def resolve_object(client: CertfleetClient, name: str, *, domain_id: str) -> dict:
    objects = client.enrollment_objects(domain_id=domain_id)
    for obj in objects:
        if obj["name"] == name:
            return obj
    known = ", ".join(sorted(o["name"] for o in objects)) or "none"
    raise CannotStart(f"no enrollment object named {name!r} in this domain or its ancestors "
                  f"(available: {known}); create it first or check --domain")


def resolve_devices(client: CertfleetClient, values: list[str], *, domain_id: str) -> list[str]:
    """Device ids for ids, names or serials; CannotStart naming every one not found."""
    ids, unknown = [], []
    for value in dict.fromkeys(values):  # in order, once each
        if _is_uuid(value):
            ids.append(value)
            continue
        found = client.devices_named(value, domain_id=domain_id)
        if len(found) > 1:
            raise CannotStart(f"{len(found)} devices are named {value!r}; give their ids instead")
        if found:
            ids.append(found[0]["id"])
        else:
            unknown.append(value)
    if unknown:
        raise CannotStart(f"no device with the name or serial {', '.join(map(repr, unknown))} in this domain "
                      "or its subdomains")
    return ids


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"ETA {minutes}:{secs:02d}"


def follow(client: CertfleetClient, batch: dict, *, domain_id: str, console: Console,
           interval: float) -> dict:
    """Show the batch's progress until it has finished; return its last state."""
    columns = (
        TextColumn("[bold]enrolling"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[green]{task.fields[succeeded]} succeeded [red]{task.fields[failed]} failed "
                   "[default]{task.fields[queued]} queued {task.fields[running]} running"),
        TextColumn("{task.fields[eta]}"), TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("enroll", total=batch["total"], **_fields(batch))
        answered = time.monotonic()
        while True:
            progress.update(task, completed=batch["succeeded"] + batch["failed"], **_fields(batch))
            if batch["finished"]:
                return batch
            time.sleep(interval)
            try:
                batch, answered = client.bulk_enrollment(batch["id"], domain_id=domain_id), time.monotonic()
            except (httpx.TransportError, ApiError) as exc:
                # A controller restarting (or its database away for a moment) is waited out: the
                # enrollment goes on in the workers meanwhile.
                gave_up = time.monotonic() - answered > UNREACHABLE_PATIENCE_S
                if gave_up or (isinstance(exc, ApiError) and exc.status < 500):
                    raise


def _fields(batch: dict) -> dict:
    return {name: batch[name] for name in ("succeeded", "failed", "queued", "running")} | {
        "eta": _eta(batch["eta_seconds"])}


def summary(batch: dict, *, object_name: str) -> list[str | Table]:
    """What the operator reads at the end: the counts, then the failures by code."""
    rate = batch["total"] / batch["elapsed_seconds"] if batch["elapsed_seconds"] else 0.0
    lines: list[str | Table] = [
        f"bulk enrollment {batch['id']}: {object_name} on {batch['selected']} selected devices, "
        f"{batch['skipped']} skipped (they already had it)",
        f"{batch['succeeded']} succeeded, {batch['failed']} failed of {batch['total']} "
        f"in {batch['elapsed_seconds']:.1f} s ({rate:.0f} per s)",
    ]
    if batch["failures"]:
        table = Table(title="failures by error code")
        for column in ("error code", "devices", "for example"):
            table.add_column(column, overflow="fold")
        for group in batch["failures"]:
            table.add_row(group["error_code"], str(group["count"]), group["example_message"])
        lines.append(table)
    return lines


def main(args: argparse.Namespace) -> int:
    console = Console()
    if not args.token:
        print("error: no API token: pass --token or set CERTFLEET_TOKEN "
              "(certfleet token create --role admin)", file=sys.stderr)
        return EXIT_REFUSED
    with CertfleetClient(args.api_url, args.token) as client:
        try:
            return _run(client, args, console)
        except httpx.TransportError as exc:
            print(f"error: the controller at {args.api_url} cannot be reached: {exc or type(exc).__name__}",
                  file=sys.stderr)
            return EXIT_REFUSED


def _run(client: CertfleetClient, args: argparse.Namespace, console: Console) -> int:
    try:
        domain_id = resolve_domain(client, args.domain)
        obj = resolve_object(client, args.object, domain_id=domain_id)
        device_ids = resolve_devices(client, args.device, domain_id=domain_id) if args.device else []
        selection = selection_of(args, device_ids)
        batch = client.start_bulk_enrollment(obj["id"], selection=selection, domain_id=domain_id)
    except CannotStart as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ApiError as exc:
        print(f"error: the controller refused: {exc.code}: {exc.detail}", file=sys.stderr)
        return EXIT_REFUSED
    console.print(f"started bulk enrollment {batch['id']}: {obj['name']} on {batch['total']} devices "
                  f"({batch['skipped']} skipped: they already had it)")
    if args.no_wait:
        return 0
    try:
        batch = follow(client, batch, domain_id=domain_id, console=console, interval=args.interval)
    except KeyboardInterrupt:
        console.print(f"stopped following; bulk enrollment {batch['id']} goes on "
                      f"(GET /api/v1/domains/{domain_id}/bulk-enrollments/{batch['id']})")
        return EXIT_INTERRUPTED
    for line in summary(batch, object_name=obj["name"]):
        console.print(line)
    return EXIT_FAILED if batch["failed"] else 0
