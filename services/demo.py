"""``certfleet demo``: enroll a simulated fleet end to end and show it happen.

Starts the embedded stack, imports the simulator's fleet through the API, installs one
enrollment object on every device (the seed's "Add"), follows progress with a bar, and
prints a summary. Exit status 1 when any device failed.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.api_client import CertfleetClient
from services.stack import EmbeddedStack
from shared.logging import configure_logging
from shared.settings import Settings


def enroll_fleet(client: CertfleetClient, *, enrollment_object: dict, concurrency: int = 8) -> list[dict]:
    """Install the enrollment object on every device of the Global domain; return the jobs."""
    devices = client.devices()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(pool.map(lambda d: client.add_trustpoint(d["id"], enrollment_object["id"]), devices))
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


def summary_table(*, devices: int, counts: Counter, elapsed: float, method: str) -> Table:
    table = Table(title="certfleet demo")
    for column in ("devices", "method", "available", "failed", "unfinished", "elapsed", "per s"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row(
        str(devices), method, str(counts["available"]), str(counts["failed"]), str(counts["unfinished"]),
        f"{elapsed:.1f} s", f"{counts['available'] / elapsed:.0f}" if elapsed else "-",
    )
    return table


def run_demo(*, devices: int, key_type: str = "ecdsa", key_size: int = 256, threads: int = 8,
             timeout: float = 600.0, console: Console | None = None) -> int:
    console = console or Console()
    settings = Settings.from_env()
    # The bar and the table are the demo's output; only warnings and errors are logged.
    configure_logging("WARNING" if settings.log_level.upper() in ("DEBUG", "INFO") else settings.log_level,
                      "console")
    with EmbeddedStack(settings, devices=devices, worker_threads=threads) as stack:
        console.print(f"embedded stack up: API {stack.api_url}, device simulator {stack.sim.url}, "
                      f"database {stack.settings.database_url.split('@')[-1]}, "
                      f"broker {'redis' if settings.broker_url else 'in-process'}")
        with CertfleetClient(stack.api_url, stack.admin_token) as client:
            imported = client.import_devices(stack.sim.url)
            console.print(f"imported {imported['imported']} devices from the simulator")
            obj = client.create_enrollment_object(
                name="demo-self-signed", enrollment_type="self_signed", key_type=key_type,
                key_size=key_size, common_name="", organization="certfleet demo", country="US",
                include_fqdn=True,
            )
            started = time.monotonic()
            # Add the trustpoints in the background: the bar shows enrollment as it happens.
            with ThreadPoolExecutor(max_workers=1) as background:
                adding = background.submit(enroll_fleet, client, enrollment_object=obj)
                counts = follow(client, devices, console=console, timeout=timeout)
                adding.result()
            elapsed = time.monotonic() - started
            console.print(summary_table(devices=devices, counts=counts, elapsed=elapsed, method="self-signed"))
            if counts["failed"]:
                failures = Counter(
                    (t["error_code"], t["error_message"]) for t in client.trustpoints(identity_status="failed")
                )
                for (code, message), n in failures.most_common(5):
                    console.print(f"[red]{n} × {code}: {message}")
    return 0 if counts["available"] == devices else 1
