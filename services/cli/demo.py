"""``certfleet demo``: enroll a simulated fleet end to end and show it happen.

Starts the embedded stack, imports the simulator's fleet through the API, installs one
enrollment object on every device (the seed's "Add"), follows progress with a bar, and
prints a summary. Exit status 1 when any device failed.

``--enrollment est`` and ``--enrollment scep`` also start the CA simulator in the stack:
every device then enrolls with the CA itself, over EST (trusting the CA's TLS root, with the
enrollment object's username and password) or over SCEP (with its challenge password); the
credentials are made up for this run. ``--enrollment mixed`` spreads the three methods over
the fleet, a third each, and the summary shows a row per method.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli.api_client import CertfleetClient
from services.stack.embedded import EmbeddedStack
from shared.logging import configure_logging
from shared.settings import Settings


def enroll_fleet(client: CertfleetClient, *, objects: Sequence[dict], concurrency: int = 8) -> list[dict]:
    """Install an enrollment object on every device of the Global domain, taking ``objects`` in
    turn (one object: all devices get it); return the jobs."""
    devices = client.devices()
    plan = [(device, objects[i % len(objects)]) for i, device in enumerate(devices)]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(pool.map(lambda pair: client.add_trustpoint(pair[0]["id"], pair[1]["id"]), plan))
    return [a["job"] for a in answers]


def follow(client: CertfleetClient, total: int, *, console: Console, timeout: float) -> Counter:
    """Show a progress bar until every trustpoint has left in_progress; return status counts."""
    columns = (
        TextColumn("[bold]enrolling"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[green]{task.fields[ok]} available [red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    deadline = time.monotonic() + timeout
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("enroll", total=total, ok=0, failed=0)
        while True:
            ok = client.count_trustpoints(identity_status="available")
            failed = client.count_trustpoints(identity_status="failed")
            progress.update(task, completed=ok + failed, ok=ok, failed=failed)
            if ok + failed >= total or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    return Counter(available=ok, failed=failed, unfinished=total - ok - failed)


def summary_table(*, rows: Sequence[tuple[str, int, Counter]], elapsed: float) -> Table:
    """One row per method (devices, counts); several methods get a total row too."""
    table = Table(title="certfleet demo")
    for column in ("devices", "method", "available", "failed", "unfinished", "elapsed", "per s"):
        table.add_column(column, justify="right", no_wrap=True)
    if len(rows) > 1:
        rows = [*rows, ("all", sum(n for _, n, _ in rows), sum((c for _, _, c in rows), Counter()))]
    for method, devices, counts in rows:
        table.add_row(
            str(devices), method, str(counts["available"]), str(counts["failed"]), str(counts["unfinished"]),
            f"{elapsed:.1f} s", f"{counts['available'] / elapsed:.0f}" if elapsed else "-",
        )
    return table


def counts_by_method(client: CertfleetClient, names: dict[str, str]) -> list[tuple[str, int, Counter]]:
    """(method, devices, status counts) per enrollment object; ``names`` maps its trustpoint name
    (the object's name) to the method."""
    counts = {name: Counter() for name in names}
    for trustpoint in client.trustpoints():
        if trustpoint["name"] in counts:
            counts[trustpoint["name"]][trustpoint["identity_status"]] += 1
    rows = []
    for name, method in names.items():
        c = counts[name]
        total = sum(c.values())
        rows.append((method, total, Counter(available=c["available"], failed=c["failed"],
                                            unfinished=total - c["available"] - c["failed"])))
    return rows


#: The enrollment methods the demo offers, as the command line names them.
ENROLLMENTS = ("self-signed", "est", "scep", "mixed")
#: What ``mixed`` spreads over the fleet, a third each.
MIXED = ("self-signed", "est", "scep")
EST_USER = "demo-enroller"


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


def run_demo(*, devices: int, key_type: str = "ecdsa", key_size: int = 256, threads: int = 8,
             enrollment: str = "self-signed", timeout: float = 600.0, console: Console | None = None) -> int:
    if enrollment not in ENROLLMENTS:
        raise ValueError(f"enrollment must be one of {', '.join(ENROLLMENTS)}, not {enrollment!r}")
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
            objects = [_enrollment_object(client, stack, method, demo=demo, key_type=key_type,
                                          key_size=key_size) for method in methods]
            started = time.monotonic()
            # Add the trustpoints in the background: the bar shows enrollment as it happens.
            with ThreadPoolExecutor(max_workers=1) as background:
                adding = background.submit(enroll_fleet, client, objects=objects)
                counts = follow(client, devices, console=console, timeout=timeout)
                adding.result()
            elapsed = time.monotonic() - started
            if len(methods) == 1:
                rows = [(enrollment, devices, counts)]
            else:
                rows = counts_by_method(client, {o["name"]: m for o, m in zip(objects, methods, strict=True)})
            console.print(summary_table(rows=rows, elapsed=elapsed))
            if counts["failed"]:
                failures = Counter(
                    (t["error_code"], t["error_message"]) for t in client.trustpoints(identity_status="failed")
                )
                for (code, message), n in failures.most_common(5):
                    console.print(f"[red]{n} × {code}: {message}")
    return 0 if counts["available"] == devices else 1
