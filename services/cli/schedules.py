"""``certfleet schedules``: what the scheduler runs, when each schedule runs next and how its
last run went; ``certfleet schedules set`` changes one (admin).

    certfleet schedules [--json]
    certfleet schedules set renewal (--cron '*/5 * * * *' | --interval 300) [--enable | --disable]
    certfleet schedules run device-health
"""

from __future__ import annotations

import argparse
import json

from services.cli.connection import add_api_arguments, connect
from services.cli.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_arguments(parser)
    actions = parser.add_subparsers(dest="schedules_action")
    change = actions.add_parser("set", help="change a schedule's timing, or switch it on or off (admin)")
    change.add_argument("name", help="the schedule, e.g. renewal")
    timing = change.add_mutually_exclusive_group()
    timing.add_argument("--cron", metavar="EXPR", help="five-field cron expression, in UTC (e.g. '0 3 * * *')")
    timing.add_argument("--interval", type=int, metavar="SECONDS", help="run every SECONDS seconds")
    switch = change.add_mutually_exclusive_group()
    switch.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None)
    switch.add_argument("--disable", dest="enabled", action="store_const", const=False)
    add_api_arguments(change)
    run = actions.add_parser("run", help="run a schedule at the scheduler's next tick (admin)")
    run.add_argument("name", help="the schedule, e.g. device-health")
    add_api_arguments(run)


def main(args: argparse.Namespace) -> int:
    if args.schedules_action == "set":
        return _set(args)
    if args.schedules_action == "run":
        with connect(args) as client:
            schedule = client.run_schedule(args.name)
        print(f"schedule {schedule['name']}: runs at the scheduler's next tick "
              f"(next run {_time(schedule['next_run_at'])} UTC)")
        return 0
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


def _set(args: argparse.Namespace) -> int:
    if args.cron is None and args.interval is None and args.enabled is None:
        raise UsageError("nothing_to_change", "say what to change: --cron EXPR or --interval SECONDS, "
                                              "and/or --enable or --disable")
    change = {key: value for key, value in (("cron", args.cron), ("interval_seconds", args.interval),
                                            ("enabled", args.enabled)) if value is not None}
    with connect(args) as client:
        schedule = client.update_schedule(args.name, **change)
    state = "" if schedule["enabled"] else ", disabled"
    print(f"schedule {schedule['name']}: {schedule['timing']}{state}; next run {_time(schedule['next_run_at'])} UTC")
    return 0
