"""``certfleet webhooks``: the webhooks that receive alert events, and their delivery logs.

    certfleet webhooks add URL [--name NAME] [--code CODE ...] [--severity SEVERITY ...] [--secret SECRET]
                           [--disabled] [--domain DOMAIN]
    certfleet webhooks list [--domain DOMAIN]
    certfleet webhooks deliveries WEBHOOK_ID [--state pending|delivered|dead] [--limit N] [--domain DOMAIN]
    certfleet webhooks retry WEBHOOK_ID DELIVERY_ID [--domain DOMAIN]
    certfleet webhooks delete WEBHOOK_ID [--domain DOMAIN]

The secret signs every delivery (see README, "For alert consumers"). Without ``--secret`` (or
``CERTFLEET_WEBHOOK_SECRET``) one is made and printed, once: the API never shows it again.
``--json`` prints the API's answer instead, for scripts.
"""

from __future__ import annotations

import argparse
import json
import os

from services.cli.connection import add_api_arguments, connect
from shared.domains import GLOBAL_DOMAIN_ID

STATES = ("pending", "delivered", "dead")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", default=str(GLOBAL_DOMAIN_ID), metavar="DOMAIN",
                        help="domain by id or name (default Global)")
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="webhooks_action", required=True)
    add = actions.add_parser("add", help="send the domain's alert events (and its subdomains') to a URL")
    add.add_argument("url", help="http:// or https:// URL the events are POSTed to")
    add.add_argument("--name", default=None, help="what the webhook is for")
    add.add_argument("--code", dest="codes", action="append", default=[], metavar="CODE",
                     help="send only alerts of this code (repeat for more; default every code), e.g. F0853")
    add.add_argument("--severity", dest="severities", action="append", default=[], metavar="SEVERITY",
                     help="send only alerts of this severity (repeat for more): critical, major, minor, warning")
    add.add_argument("--secret", default=os.environ.get("CERTFLEET_WEBHOOK_SECRET", ""),
                     help="signing secret, 16 to 256 characters (env CERTFLEET_WEBHOOK_SECRET; default: "
                          "a new one, printed once)")
    add.add_argument("--disabled", action="store_true", help="add it switched off")
    _common(add)
    add.set_defaults(func=_add)
    listing = actions.add_parser("list", help="the webhooks of the domain and its subdomains")
    _common(listing)
    listing.set_defaults(func=_list)
    log = actions.add_parser("deliveries", help="a webhook's delivery log, newest first")
    log.add_argument("webhook", metavar="WEBHOOK_ID")
    log.add_argument("--state", choices=STATES, help="only deliveries in this state")
    log.add_argument("--limit", type=int, default=50, help="entries shown (default 50)")
    _common(log)
    log.set_defaults(func=_deliveries)
    retry = actions.add_parser("retry", help="send a dead delivery again")
    retry.add_argument("webhook", metavar="WEBHOOK_ID")
    retry.add_argument("delivery", metavar="DELIVERY_ID")
    _common(retry)
    retry.set_defaults(func=_retry)
    remove = actions.add_parser("delete", help="delete a webhook and its delivery log")
    remove.add_argument("webhook", metavar="WEBHOOK_ID")
    _common(remove)
    remove.set_defaults(func=_delete)


def main(args: argparse.Namespace) -> int:  # each action sets its own func
    return args.func(args)


def _connected(args: argparse.Namespace):
    from services.cli.lookup import resolve_domain

    client = connect(args)
    args.domain = resolve_domain(client, args.domain)
    return client


def _add(args: argparse.Namespace) -> int:
    import secrets

    generated = not args.secret
    secret = secrets.token_hex(32) if generated else args.secret
    body = {"url": args.url, "codes": args.codes, "severities": args.severities, "secret": secret,
            "enabled": not args.disabled, **({"name": args.name} if args.name is not None else {})}
    with _connected(args) as client:
        webhook = client.create_webhook(domain_id=args.domain, **body)
    if args.json:
        print(json.dumps({**webhook, **({"secret": secret} if generated else {})}, indent=2))
        return 0
    print(f"webhook {webhook['id']} added: {_filters(webhook)} to {webhook['url']}"
          + ("" if webhook["enabled"] else " (disabled)"))
    if generated:
        print(f"secret: {secret}\n(shown this once: give it to the receiver, which checks each delivery's "
              "Certfleet-Signature with it)")
    return 0


def _filters(webhook: dict) -> str:
    codes = ", ".join(webhook["codes"]) or "every code"
    severities = ", ".join(webhook["severities"]) or "every severity"
    return f"alert events of {codes}, {severities}"


def _list(args: argparse.Namespace) -> int:
    with _connected(args) as client:
        webhooks = client.webhooks(domain_id=args.domain)
    if args.json:
        print(json.dumps(webhooks, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Webhooks")
    for column in ("Id", "Name", "URL", "Codes", "Severities", "Enabled", "Pending", "Dead"):
        table.add_column(column)
    for w in webhooks:
        table.add_row(w["id"], w["name"] or "-", w["url"], ", ".join(w["codes"]) or "all",
                      ", ".join(w["severities"]) or "all", "yes" if w["enabled"] else "no", str(w["pending"]),
                      str(w["dead"]))
    Console(width=200).print(table)
    return 0


def _deliveries(args: argparse.Namespace) -> int:
    with _connected(args) as client:
        page = client.webhook_deliveries(args.webhook, domain_id=args.domain, state=args.state, limit=args.limit)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Deliveries of webhook {args.webhook} ({len(page['items'])} of {page['total']}, newest "
                        "first; times in UTC)")
    for column in ("Delivery", "Event", "Type", "State", "Attempts", "Last status", "Last error", "Created",
                   "Next attempt", "Delivered"):
        table.add_column(column)
    for d in page["items"]:
        table.add_row(d["id"], d["event_id"], d["event_type"].rsplit(".", 1)[-1], d["state"], str(d["attempts"]),
                      str(d["last_status"] or "-"), d["last_error"] or "-", _time(d["created_at"]),
                      _time(d["next_attempt_at"]) if d["state"] == "pending" else "-", _time(d["delivered_at"]))
    Console(width=240).print(table)
    return 0


def _time(value: str | None) -> str:
    return value.replace("T", " ")[:19] if value else "-"


def _retry(args: argparse.Namespace) -> int:
    with _connected(args) as client:
        delivery = client.retry_webhook_delivery(args.webhook, args.delivery, domain_id=args.domain)
    print(json.dumps(delivery, indent=2) if args.json else f"delivery {delivery['id']} is pending again")
    return 0


def _delete(args: argparse.Namespace) -> int:
    with _connected(args) as client:
        client.delete_webhook(args.webhook, domain_id=args.domain)
    print(json.dumps({"deleted": args.webhook}) if args.json else f"webhook {args.webhook} deleted")
    return 0
