"""``certfleet alerts list`` and ``certfleet alerts ack``: the health alerts of a domain (and its
subdomains), and saying someone is on one.

    certfleet alerts list [--state open|active|acknowledged|cleared|all] [--code F0853]
                          [--severity critical|major|minor|warning] [--device DEVICE] [--domain DOMAIN]
                          [--limit N] [--json]
    certfleet alerts ack ID [--domain DOMAIN]

``list`` shows the open alerts unless told otherwise, newest ``last_seen`` first. DEVICE is a
device id, name or serial; DOMAIN a domain id or name (default Global). Acknowledging needs an
admin or network_admin token; acknowledging an acknowledged alert again changes nothing, a
cleared one is refused (``alert_cleared``).
"""

from __future__ import annotations

import argparse
import json

from services.cli.arguments import positive_int
from services.cli.connection import add_api_arguments, connect
from services.cli.errors import UsageError
from services.cli.lookup import is_uuid, resolve_device, resolve_domain
from shared.domains import GLOBAL_DOMAIN_ID
from shared.enums import AlertCode, AlertState, Severity

STATES = ("open", *(s.value for s in AlertState), "all")
#: Largest page the API serves.
_PAGE = 1000


def _domain_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", default=str(GLOBAL_DOMAIN_ID), metavar="DOMAIN",
                        help="domain by id or name (default Global); its subdomains' alerts are included")


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", choices=STATES, default="open",
                        help="open (active or acknowledged; the default), one state, or all")
    codes = [c.value for c in AlertCode]
    parser.add_argument("--code", choices=codes, metavar="CODE", help=f"only this alert code: {', '.join(codes)}")
    parser.add_argument("--severity", choices=[s.value for s in Severity], help="only this severity")
    parser.add_argument("--device", metavar="DEVICE", help="only this device's alerts (id, name or serial)")
    parser.add_argument("--limit", type=positive_int, default=200, metavar="N",
                        help="show at most N alerts (default 200)")
    parser.add_argument("--json", action="store_true", help="print the alerts as JSON")
    _domain_argument(parser)
    add_api_arguments(parser)


def add_ack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("alert_id", metavar="ID", help="the alert's id (certfleet alerts list shows it)")
    _domain_argument(parser)
    add_api_arguments(parser)


def list_alerts(args: argparse.Namespace) -> int:
    with connect(args) as client:
        domain = resolve_domain(client, args.domain)
        filters = {"state": None if args.state == "all" else args.state, "code": args.code,
                   "severity": args.severity}
        if args.device:
            filters["device_id"] = resolve_device(client, args.device, domain_id=domain)["id"]
        alerts, total = [], 0
        while len(alerts) < args.limit:
            page = client.alerts_page(domain_id=domain, offset=len(alerts), limit=min(_PAGE, args.limit - len(alerts)),
                                      **filters)
            alerts += page["items"]
            total = page["total"]
            if not page["items"] or len(alerts) >= total:
                break
    if args.json:
        print(json.dumps({"items": alerts, "total": total}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    shown = f"{len(alerts)} of {total}" if len(alerts) < total else str(total)
    table = Table(title=f"Alerts ({args.state}): {shown}, newest first (times in UTC)")
    table.add_column("ID", no_wrap=True, min_width=36)  # whole, to copy into certfleet alerts ack
    for column in ("Severity", "Code", "State", "About", "Description", "Last seen"):
        table.add_column(column, overflow="fold")
    for alert in alerts:
        about = alert["device_name"] or alert["resource"]
        if alert["trustpoint_name"]:
            about += f" / {alert['trustpoint_name']}"
        state = alert["state"] + (f" by {alert['acknowledged_by']}" if alert["acknowledged_by"] else "")
        table.add_row(alert["id"], alert["severity"], alert["code"], state, about, alert["description"],
                      _time(alert["last_seen"]))
    Console(width=200).print(table)
    return 0


def acknowledge(args: argparse.Namespace) -> int:
    if not is_uuid(args.alert_id):
        raise UsageError("bad_alert_id", f"{args.alert_id!r} is not an alert id; certfleet alerts list shows them")
    with connect(args) as client:
        alert = client.acknowledge_alert(args.alert_id, domain_id=resolve_domain(client, args.domain))
    print(f"alert {alert['id']} ({alert['code']}, {alert['severity']}) acknowledged by {alert['acknowledged_by']} "
          f"at {_time(alert['acknowledged_at'])} UTC: {alert['description']}")
    return 0


def _time(value: str | None) -> str:
    return value.replace("T", " ")[:19] if value else "-"
