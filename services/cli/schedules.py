"""``certfleet schedules``: what the scheduler runs, when each schedule runs next and how its
last run went.

    certfleet schedules [--json]
"""

from __future__ import annotations

import argparse
import json

from services.cli.connection import add_api_arguments, connect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_arguments(parser)


def main(args: argparse.Namespace) -> int:
    with connect(args) as client:
        schedules = client.schedules()
    if args.json:
        print(json.dumps(schedules, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Schedules (times in UTC)")
    for column in ("Schedule", "Timing", "Next run", "Last run", "Outcome", "Detail"):
        table.add_column(column)
    for schedule in schedules:
        outcome = "running" if schedule["running"] else (schedule["last_outcome"] or "-")
        table.add_row(schedule["name"], schedule["timing"] + ("" if schedule["enabled"] else " (disabled)"),
                      _time(schedule["next_run_at"]), _time(schedule["last_run_at"]), outcome,
                      schedule["last_detail"] or schedule["description"])
    Console(width=160).print(table)
    return 0


def _time(value: str | None) -> str:
    return value.replace("T", " ")[:19] if value else "-"
