"""Following bulk enrollments and bulk actions to their end, as ``certfleet enroll``, ``demo``
and ``re-enroll``/``refresh``/``delete`` show them: one live progress bar over every batch
(succeeded, failed, queued, running, the controller's ETA), then the failures grouped by error
code."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli.api_client import ApiError, CertfleetClient

#: How long the bar waits out a controller that stopped answering before giving up.
UNREACHABLE_PATIENCE_S = 60.0
COUNTS = ("total", "succeeded", "failed", "queued", "running")


def combined(batches: Sequence[dict]) -> dict:
    """The batches as one: their counts added up, finished when all are, and the ETA of the
    last one to finish (they run side by side)."""
    totals = {name: sum(b[name] for b in batches) for name in COUNTS}
    etas = [b["eta_seconds"] for b in batches if not b["finished"]]
    eta = None if not etas or None in etas else max(etas)
    return totals | {"finished": all(b["finished"] for b in batches), "eta_seconds": eta}


def failure_groups(batches: Sequence[dict]) -> list[tuple[str, int, str]]:
    """(error code, devices, an example message) over the batches, the commonest code first."""
    groups: dict[str, list] = {}
    for batch in batches:
        for group in batch["failures"]:
            entry = groups.setdefault(group["error_code"], [0, group["example_message"]])
            entry[0] += group["count"]
    return sorted(((code, n, example) for code, (n, example) in groups.items()), key=lambda g: (-g[1], g[0]))


def failures_table(batches: Sequence[dict]) -> Table | None:
    groups = failure_groups(batches)
    if not groups:
        return None
    table = Table(title="failures by error code")
    for column in ("error code", "devices", "for example"):
        table.add_column(column, overflow="fold")
    for code, count, example in groups:
        table.add_row(code, str(count), example)
    return table


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"ETA {minutes}:{secs:02d}"


def _fields(progress: dict) -> dict:
    return {name: progress[name] for name in ("succeeded", "failed", "queued", "running")} | {
        "eta": eta_text(progress["eta_seconds"])}


def follow(client: CertfleetClient, batches: Sequence[dict], *, domain_id: str, console: Console,
           interval: float, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep, label: str = "enrolling",
           fetch: Callable[..., dict] | None = None) -> list[dict]:
    """Draw the batches' progress until every one has finished; return their last states.

    ``fetch(batch_id, domain_id=…)`` reads a batch again: a bulk enrollment's by default, a bulk
    action's with ``client.bulk_action``. ``label`` leads the bar ("re-enrolling").
    A controller that stops answering (restarting, its database away for a moment) is waited
    out for :data:`UNREACHABLE_PATIENCE_S`: the batch goes on in the workers meanwhile."""
    fetch = fetch or client.bulk_enrollment
    columns = (
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[green]{task.fields[succeeded]} succeeded [red]{task.fields[failed]} failed "
                   "[default]{task.fields[queued]} queued {task.fields[running]} running"),
        TextColumn("{task.fields[eta]}"), TimeElapsedColumn(),
    )
    latest = list(batches)
    # Drawn after each read rather than ten times a second: what it shows changes once per read,
    # and redrawing an unchanged bar cost the command a tenth of a second of CPU every ten seconds.
    with Progress(*columns, console=console, auto_refresh=False) as bar:
        now = combined(latest)
        task = bar.add_task("enroll", total=now["total"], **_fields(now))
        answered = clock()
        while True:
            now = combined(latest)
            bar.update(task, completed=now["succeeded"] + now["failed"], **_fields(now), refresh=True)
            if now["finished"]:
                return latest
            sleep(interval)
            try:
                latest = [b if b["finished"] else fetch(b["id"], domain_id=domain_id)
                          for b in latest]
                answered = clock()
            except (httpx.TransportError, ApiError) as exc:
                gave_up = clock() - answered > UNREACHABLE_PATIENCE_S
                if gave_up or (isinstance(exc, ApiError) and exc.status < 500):
                    raise
