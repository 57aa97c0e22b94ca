"""``certfleet demo``: enroll a simulated fleet end to end and show it happen.

Starts the embedded stack, imports the simulator's fleet through the API and enrolls it as
an operator would: one bulk enrollment of an enrollment object on every device, followed
with a progress bar until every device has finished, then a summary table. Exit status 1
when any device failed (services.cli.errors).

``--enrollment est`` and ``--enrollment scep`` also start the CA simulator in the stack:
every device then enrolls with the CA itself, over EST (trusting the CA's TLS root, with the
enrollment object's username and password) or over SCEP (with its challenge password); the
credentials are made up for this run. ``--enrollment mixed`` spreads the three methods over
the fleet, a third each: one bulk enrollment per method, each selecting its third of the
devices by id, all followed on one bar; the summary shows a row per method.

``--lifecycle`` shows what happens after enrollment instead, in a few minutes: renewals,
a CA-bundle update, expired keyrings raising F0853 and their regeneration
(:mod:`services.cli.lifecycle`).
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.cli.arguments import positive_int
from services.cli.errors import CliError, Interrupted
from shared.domains import GLOBAL_DOMAIN_ID

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from services.cli.api_client import CertfleetClient
    from services.stack.embedded import EmbeddedStack

#: The enrollment methods the demo offers, as the command line names them.
ENROLLMENTS = ("self-signed", "est", "scep", "mixed")
#: What ``mixed`` spreads over the fleet, a third each.
MIXED = ("self-signed", "est", "scep")
EST_USER = "demo-enroller"
GLOBAL = str(GLOBAL_DOMAIN_ID)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=positive_int, default=None, help="fleet size (default 500)")
    parser.add_argument("--key-type", default="ecdsa", choices=["rsa", "ecdsa", "eddsa"])
    parser.add_argument("--key-size", type=int, default=256)
    parser.add_argument("--threads", type=positive_int, default=8, help="worker threads")
    parser.add_argument("--enrollment", default="self-signed", choices=ENROLLMENTS,
                        help="how the devices enroll: self-signed (default), est or scep with the CA simulator, "
                        "or mixed (a third each)")
    lifecycle = parser.add_argument_group("the lifecycle over time (--lifecycle)")
    lifecycle.add_argument("--lifecycle", action="store_true",
                           help="enroll over EST with short-lived certificates and show renewals, a CA-bundle update, "
                           "F0853 alerts and their regeneration (a few minutes; --devices defaults to 200)")
    lifecycle.add_argument("--lifetime", type=positive_int, default=120, metavar="SECONDS",
                           help="life of the certificates the CA issues in the lifecycle demo (default 120)")
    lifecycle.add_argument("--expired-keyrings", type=float, default=0.05, metavar="FRACTION",
                           help="share of devices whose default keyring has expired (default 0.05)")


def main(args: argparse.Namespace) -> int:
    if args.lifecycle:
        from services.cli.lifecycle import run_lifecycle

        return run_lifecycle(devices=args.devices or 200, lifetime=args.lifetime,
                             expired_keyrings=args.expired_keyrings, threads=args.threads)
    return run_demo(devices=args.devices or 500, key_type=args.key_type, key_size=args.key_size,
                    threads=args.threads, enrollment=args.enrollment)


@dataclass(frozen=True)
class DemoSecrets:
    """Credentials for this run only: the CA and the enrollment objects share them, nobody types them."""

    est_password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    scep_challenge: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)

    def ca_options(self, methods: Sequence[str]) -> dict | None:
        options: dict = {}
        if "est" in methods:
            options.update(est_user=EST_USER, est_password=self.est_password)
        if "scep" in methods:
            options.update(scep_port=0, scep_challenge=self.scep_challenge)
        return options or None


def split_fleet(device_ids: Sequence[str], methods: Sequence[str]) -> dict[str, list[str]]:
    """The devices each method enrolls: every device once, dealt out in turn (a share each, at
    most one apart); a method left without devices is left out."""
    shares = {method: list(device_ids[i::len(methods)]) for i, method in enumerate(methods)}
    return {method: ids for method, ids in shares.items() if ids}


def summary_table(rows: Sequence[tuple[str, dict]]) -> Table:
    """One row per method from its bulk enrollment; several methods get a total row too."""
    from rich.table import Table

    from services.cli.progress import combined

    table = Table(title="certfleet demo")
    for column in ("devices", "method", "succeeded", "failed", "unfinished", "elapsed", "per s"):
        table.add_column(column, justify="right", no_wrap=True)
    if len(rows) > 1:
        batches = [batch for _, batch in rows]
        rows = [*rows, ("all", combined(batches) | {"elapsed_seconds": max(b["elapsed_seconds"] for b in batches)})]
    for method, batch in rows:
        done = batch["succeeded"] + batch["failed"]
        elapsed = batch["elapsed_seconds"]
        table.add_row(
            str(batch["total"]), method, str(batch["succeeded"]), str(batch["failed"]), str(batch["total"] - done),
            f"{elapsed:.1f} s", f"{batch['succeeded'] / elapsed:.0f}" if elapsed else "-",
        )
    return table


def _enrollment_object(client: CertfleetClient, stack: EmbeddedStack, method: str, *, demo: DemoSecrets,
                       key_type: str, key_size: int) -> dict:
    common = dict(key_type=key_type, key_size=key_size, common_name="", organization="certfleet demo",
                  country="US", include_fqdn=True)
    if method == "est":
        assert stack.ca is not None
        return client.create_enrollment_object(
            name="demo-est", enrollment_type="est", enrollment_url=stack.ca.est_url + "/",
            username=EST_USER, password=demo.est_password, **common,
        )
    if method == "scep":
        assert stack.ca is not None and stack.ca.scep_url is not None
        return client.create_enrollment_object(
            name="demo-scep", enrollment_type="scep", enrollment_url=stack.ca.scep_url + "/",
            challenge_password=demo.scep_challenge, **common,
        )
    return client.create_enrollment_object(name="demo-self-signed", enrollment_type="self_signed", **common)


def start_enrollments(client: CertfleetClient, objects: dict[str, dict], *, console: Console) -> dict[str, dict]:
    """One bulk enrollment per method: all devices for a single method, else each method's share."""
    if len(objects) == 1:
        selections = {method: {"all": True} for method in objects}
    else:
        shares = split_fleet([d["id"] for d in client.devices(domain_id=GLOBAL)], list(objects))
        selections = {method: {"device_ids": ids} for method, ids in shares.items()}
    batches = {}
    for method, selection in selections.items():
        batch = client.start_bulk_enrollment(objects[method]["id"], selection=selection, domain_id=GLOBAL)
        console.print(f"started bulk enrollment {batch['id']}: {objects[method]['name']} on {batch['total']} devices")
        batches[method] = batch
    return batches


def run_demo(*, devices: int, key_type: str = "ecdsa", key_size: int = 256, threads: int = 8,
             enrollment: str = "self-signed", console: Console | None = None, interval: float = 0.25) -> int:
    if enrollment not in ENROLLMENTS:
        raise ValueError(f"enrollment must be one of {', '.join(ENROLLMENTS)}, not {enrollment!r}")
    # The whole stack is imported only when the demo runs: other commands start faster without it.
    from rich.console import Console

    from services.cli.api_client import CertfleetClient
    from services.cli.progress import follow
    from services.stack.embedded import EmbeddedStack
    from shared.logging import configure_logging
    from shared.settings import Settings

    methods = MIXED if enrollment == "mixed" else (enrollment,)
    console = console or Console()
    settings = Settings.from_env()
    # The bar and the table are the demo's output; only warnings and errors are logged.
    configure_logging("WARNING" if settings.log_level.upper() in ("DEBUG", "INFO") else settings.log_level,
                      "console")
    demo = DemoSecrets()
    with EmbeddedStack(settings, devices=devices, worker_threads=threads,
                       ca_options=demo.ca_options(methods)) as stack:
        console.print(f"embedded stack up: API {stack.api_url}, device simulator {stack.sim.url}, "
                      f"database {stack.settings.database_url.split('@')[-1]}, "
                      f"broker {'redis' if settings.broker_url else 'in-process'}")
        if stack.ca is not None:
            served = []
            if "est" in methods:
                served.append(f"EST {stack.ca.est_url} (devices trust {stack.ca.tls_ca.name})")
            if "scep" in methods:
                served.append(f"SCEP {stack.ca.scep_url}")
            console.print(f"CA simulator up: {', '.join(served)}")
        with CertfleetClient(stack.api_url, stack.admin_token) as client:
            imported = client.import_devices(stack.sim.url)
            console.print(f"imported {imported['imported']} devices from the simulator")
            objects = {method: _enrollment_object(client, stack, method, demo=demo, key_type=key_type,
                                                  key_size=key_size) for method in methods}
            batches = start_enrollments(client, objects, console=console)
            try:
                finished = follow(client, list(batches.values()), domain_id=GLOBAL, console=console,
                                  interval=interval)
            except KeyboardInterrupt:
                raise Interrupted("interrupted", "demo stopped; its embedded stack stops with it") from None
            show_summary(batches, finished, console=console)
    return 0


def show_summary(batches: dict[str, dict], finished: Sequence[dict], *, console: Console) -> None:
    """The summary table, the failures by error code if any; CliError when a device failed."""
    from services.cli.progress import failures_table

    console.print(summary_table(list(zip(batches, finished, strict=True))))
    failed = sum(batch["failed"] for batch in finished)
    if failed:
        table = failures_table(finished)
        if table is not None:
            console.print(table)
        total = sum(batch["total"] for batch in finished)
        raise CliError("devices_failed", f"{failed} of {total} devices failed to enroll "
                                         "(failures by error code above)")
