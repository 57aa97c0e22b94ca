"""``certfleet demo``: enroll a simulated fleet end to end and show it happen.

Starts the embedded stack, imports the simulator's fleet through the API, installs one
enrollment object on every device (the seed's "Add"), follows progress with a bar, and
prints a summary. Exit status 1 when any device failed.

``--enrollment est`` also starts the CA simulator in the stack: every device then enrolls
over EST with the CA itself, trusting the CA's TLS root, with the enrollment object's
username and password (made up for this run).
"""

from __future__ import annotations

import secrets
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


#: The enrollment methods the demo offers, as the command line names them.
ENROLLMENTS = ("self-signed", "est")
EST_USER = "demo-enroller"


def _enrollment_object(client: CertfleetClient, stack: EmbeddedStack, enrollment: str, *, est_password: str,
                       key_type: str, key_size: int) -> dict:
    common = dict(key_type=key_type, key_size=key_size, common_name="", organization="certfleet demo",
                  country="US", include_fqdn=True)
    if enrollment == "est":
        assert stack.ca is not None
        return client.create_enrollment_object(
            name="demo-est", enrollment_type="est", enrollment_url=stack.ca.est_url + "/",
            username=EST_USER, password=est_password, **common,
        )
    return client.create_enrollment_object(name="demo-self-signed", enrollment_type="self_signed", **common)


def run_demo(*, devices: int, key_type: str = "ecdsa", key_size: int = 256, threads: int = 8,
             enrollment: str = "self-signed", timeout: float = 600.0, console: Console | None = None) -> int:
    if enrollment not in ENROLLMENTS:
        raise ValueError(f"enrollment must be one of {', '.join(ENROLLMENTS)}, not {enrollment!r}")
    console = console or Console()
    settings = Settings.from_env()
    # The bar and the table are the demo's output; only warnings and errors are logged.
    configure_logging("WARNING" if settings.log_level.upper() in ("DEBUG", "INFO") else settings.log_level,
                      "console")
    # A password for this run only: the CA and the enrollment object share it, nobody types it.
    est_password = secrets.token_urlsafe(18)
    ca_options = {"est_user": EST_USER, "est_password": est_password} if enrollment == "est" else None
    with EmbeddedStack(settings, devices=devices, worker_threads=threads, ca_options=ca_options) as stack:
        console.print(f"embedded stack up: API {stack.api_url}, device simulator {stack.sim.url}, "
                      f"database {stack.settings.database_url.split('@')[-1]}, "
                      f"broker {'redis' if settings.broker_url else 'in-process'}")
        if stack.ca is not None:
            console.print(f"CA simulator up: EST {stack.ca.est_url} (devices trust {stack.ca.tls_ca.name})")
        with CertfleetClient(stack.api_url, stack.admin_token) as client:
            imported = client.import_devices(stack.sim.url)
            console.print(f"imported {imported['imported']} devices from the simulator")
            obj = _enrollment_object(client, stack, enrollment, est_password=est_password,
                                     key_type=key_type, key_size=key_size)
            started = time.monotonic()
            # Add the trustpoints in the background: the bar shows enrollment as it happens.
            with ThreadPoolExecutor(max_workers=1) as background:
                adding = background.submit(enroll_fleet, client, enrollment_object=obj)
                counts = follow(client, devices, console=console, timeout=timeout)
                adding.result()
            elapsed = time.monotonic() - started
            console.print(summary_table(devices=devices, counts=counts, elapsed=elapsed, method=enrollment))
            if counts["failed"]:
                failures = Counter(
                    (t["error_code"], t["error_message"]) for t in client.trustpoints(identity_status="failed")
                )
                for (code, message), n in failures.most_common(5):
                    console.print(f"[red]{n} × {code}: {message}")
    return 0 if counts["available"] == devices else 1
