"""``certfleet audit``: the audit log of a domain and its subdomains, newest first: who changed
what, when, and how it ended (refusals included).

    certfleet audit [--domain DOMAIN] [--since WHEN] [--until WHEN] [--action NAME] [--token-id ID]
                    [--outcome ok|failed] [--device DEVICE] [--target ID] [--limit N] [--json]

WHEN is an ISO 8601 time or date (UTC unless it says otherwise), or an age: ``30m``, ``24h``,
``7d``. DOMAIN is a domain id or name; by default the top of the token's reach (its home
domain). DEVICE is a device id (taken as is: the device may have been deleted since), name or
serial. Every role may read the log.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta

from services.cli.arguments import positive_int
from services.cli.connection import add_api_arguments, connect
from services.cli.lookup import is_uuid, resolve_device, resolve_domain
from shared.domains import GLOBAL_DOMAIN_ID

#: Largest page the API serves.
_PAGE = 1000
_AGE = re.compile(r"(\d+)([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def when(text: str, *, now: datetime | None = None) -> datetime:
    """An argument's time: ISO 8601 (UTC when it names no offset) or an age before ``now``."""
    age = _AGE.fullmatch(text.strip())
    if age:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a time (2030-01-31 or 2030-01-31T08:00) nor an "
                                         "age (30m, 24h, 7d)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def uuid_text(text: str) -> str:
    if not is_uuid(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an id")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", metavar="DOMAIN",
                        help="domain by id or name (default: your token's home domain); its subdomains' entries "
                             "are included")
    parser.add_argument("--since", type=when, metavar="WHEN", help="entries at or after WHEN (a time, or 24h, 7d)")
    parser.add_argument("--until", type=when, metavar="WHEN", help="entries before WHEN")
    parser.add_argument("--action", metavar="NAME",
                        help="one action: a route's name (e.g. export_certificate, update_device) or a command's "
                             "(token_create, token_revoke, secrets_rotate)")
    parser.add_argument("--token-id", type=uuid_text, metavar="ID", help="entries of this API token (its id)")
    parser.add_argument("--outcome", choices=("ok", "failed"), help="only changes made (ok), or refused (failed)")
    parser.add_argument("--device", metavar="DEVICE", help="entries about this device (id, name or serial)")
    parser.add_argument("--target", type=uuid_text, metavar="ID",
                        help="entries naming this id (an enrollment object, job, token, webhook, device…)")
    parser.add_argument("--limit", type=positive_int, default=200, metavar="N",
                        help="show at most N entries (default 200)")
    parser.add_argument("--json", action="store_true", help="print the entries as JSON")
    add_api_arguments(parser)


def main(args: argparse.Namespace) -> int:
    with connect(args) as client:
        domains = client.domains()
        domain = resolve_domain(client, args.domain) if args.domain else _home(domains)
        filters = {"since": _iso(args.since), "until": _iso(args.until), "action": args.action,
                   "token_id": args.token_id, "outcome": args.outcome, "target_id": args.target}
        if args.device:
            filters["device_id"] = (args.device if is_uuid(args.device)
                                    else resolve_device(client, args.device, domain_id=domain)["id"])
        entries, total = [], 0
        while len(entries) < args.limit:
            page = client.audit_page(domain_id=domain, offset=len(entries),
                                     limit=min(_PAGE, args.limit - len(entries)), **filters)
            entries += page["items"]
            total = page["total"]
            if not page["items"] or len(entries) >= total:
                break
    if args.json:
        print(json.dumps({"items": entries, "total": total}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    names = {d["id"]: d["name"] for d in domains}
    shown = f"{len(entries)} of {total}" if len(entries) < total else str(total)
    table = Table(title=f"Audit log of {names.get(domain, domain)}: {shown}, newest first (times in UTC)")
    for column in ("Time", "Who", "Action", "Target", "Domain", "Outcome"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(entry["at"].replace("T", " ")[:19], who(entry), entry["action"], target(entry),
                      names.get(entry["domain_id"], entry["domain_id"]), outcome(entry))
    Console(width=200).print(table)
    return 0


def who(entry: dict) -> str:
    if entry["channel"] == "cli":
        return f"{entry['operator']} (command)"
    if entry["token_id"] is None:
        return "nobody (no valid token)"
    return f"{entry['token_name'] or 'unnamed token'} ({entry['role']})"


def target(entry: dict) -> str:
    """The ids and names in the path (the domain has its own column), then what the entry adds."""
    parts = [f"{name.removesuffix('_id')} {value}" for name, value in entry["targets"].items() if name != "domain_id"]
    if entry["target_id"] and entry["target_id"] not in entry["targets"].values():
        parts.append(f"→ {entry['target_id']}")
    parts += [f"{key}={value}" for key, value in entry["details"].items()]
    return ", ".join(parts)


def outcome(entry: dict) -> str:
    status = f" {entry['status']}" if entry["status"] is not None else ""
    code = f" {entry['error_code']}" if entry["error_code"] else ""
    return f"{entry['outcome']}{status}{code}"


def _home(domains: list[dict]) -> str:
    """The top of what the token reaches: the one listed domain whose parent is not listed."""
    ids = {d["id"] for d in domains}
    return next((d["id"] for d in domains if d["parent_id"] not in ids), str(GLOBAL_DOMAIN_ID))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
