"""The ``certfleet`` command. This module only wires the subcommands together: each lives in
its own module, which adds its arguments and runs it: the operator's commands in this package
(demo, up, enroll, the bulk actions, devices, operator), the services' own with their service (controller,
worker, device-sim, ca, token). Every command runs under one error convention
(:mod:`services.cli.errors`).

Building the parser imports every command's module, so every ``certfleet`` run does: a module
that declares arguments imports only what the declarations need, and its commands import the
rest (the database layer, HTTP clients, web servers, rich) when they run. A test holds them to it.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from services.cli.errors import run


def command(sub: argparse._SubParsersAction, name: str, module: str, help_text: str, *,
            add: str = "add_arguments", main: str = "main") -> None:
    """``certfleet … NAME``: ``module.add(parser)`` declares its arguments, ``module.main(args)`` runs it."""
    target = import_module(module)
    parser = sub.add_parser(name, help=help_text)
    getattr(target, add)(parser)
    parser.set_defaults(func=getattr(target, main))


def group(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse._SubParsersAction:
    """``certfleet NAME …``: a command made of subcommands."""
    return sub.add_parser(name, help=help_text).add_subparsers(dest=f"{name}_command", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certfleet", description="Certificate lifecycle for device fleets")
    sub = parser.add_subparsers(dest="command", required=True)
    command(sub, "demo", "services.cli.demo", "enroll a simulated fleet end to end in one process")
    command(sub, "up", "services.cli.up", "run the embedded stack and leave it serving the API")
    command(sub, "controller", "services.controller.cli", "serve the REST API (with the reconciler and scheduler)")
    command(sub, "scheduler", "services.controller.cli", "run the scheduler alone (renewals), without the API",
            add="add_scheduler_arguments", main="scheduler_main")
    command(sub, "cert-update", "services.cli.cert_update", "certfleet's CA bundle: test, run-now, auto-update")
    command(sub, "show", "services.cli.cert_update", "show settings: certfleet show cert-update",
            add="add_show_arguments")
    command(sub, "schedules", "services.cli.schedules", "show the scheduler's schedules, next and last runs")
    command(sub, "worker", "services.worker.cli", "run Dramatiq worker processes")
    command(sub, "device-sim", "services.device_sim.cli", "serve a simulated device fleet")
    command(sub, "ca", "services.ca_sim.cli", "CA simulator (EST and SCEP)")
    command(sub, "db", "services.cli.db", "the database schema: certfleet db upgrade")
    command(sub, "enroll", "services.cli.enroll", "install an enrollment object on many devices and follow it")
    command(sub, "re-enroll", "services.cli.bulk", "re-enroll an enrollment object's trustpoints on many devices",
            main="re_enroll")
    command(sub, "refresh", "services.cli.bulk", "refresh an enrollment object's trustpoints on many devices",
            main="refresh")
    command(sub, "delete", "services.cli.bulk", "delete an enrollment object's trustpoints from many devices",
            add="add_delete_arguments", main="delete")
    weak_crypto = group(sub, "weak-crypto", "allow or forbid weak ciphers on many devices")
    command(weak_crypto, "enable", "services.cli.bulk", "enable weak-crypto (asks to confirm; --yes to skip)",
            add="add_weak_crypto_arguments", main="weak_crypto_enable")
    command(weak_crypto, "disable", "services.cli.bulk", "disable weak-crypto",
            add="add_weak_crypto_arguments", main="weak_crypto_disable")

    support = group(group(sub, "system", "device system commands"), "support", "device support commands")
    command(support, "regenerate-security-keyring", "services.cli.keyrings",
            "regenerate devices' default keyring (fixes F0853: the keyring's certificate is invalid)")

    secrets = group(sub, "secrets", "the secrets stored encrypted in the database")
    command(secrets, "rotate", "services.cli.secret_keys", "re-encrypt every stored secret under a new "
            "CERTFLEET_SECRET_KEY (stop the services first)", add="add_rotate_arguments", main="rotate_command")

    token = group(sub, "token", "API tokens")
    command(token, "create", "services.controller.cli", "create a token and print it",
            add="add_token_arguments", main="token_create")
    command(token, "list", "services.controller.cli", "list the tokens (never the tokens themselves)",
            add="add_token_list_arguments", main="token_list")
    command(token, "revoke", "services.controller.cli", "revoke a token at once, on every controller",
            add="add_token_revoke_arguments", main="token_revoke")

    endpoints = group(sub, "endpoints", "the allow-list of device management endpoints trusted with secrets")
    command(endpoints, "list", "services.cli.endpoints", "list the allowed management endpoints",
            add="add_list_arguments", main="list_endpoints")
    command(endpoints, "allow", "services.cli.endpoints", "allow a management endpoint (admin homed at Global)",
            add="add_allow_arguments", main="allow")
    command(endpoints, "remove", "services.cli.endpoints", "remove an allowed management endpoint (admin homed at "
            "Global)", add="add_remove_arguments", main="remove")

    devices = group(sub, "devices", "the fleet's devices")
    command(devices, "import", "services.cli.devices", "register a fleet's devices in a domain",
            add="add_import_arguments", main="import_devices")

    alerts = group(sub, "alerts", "health alerts: list, acknowledge, watch")
    command(alerts, "list", "services.cli.alerts", "list a domain's alerts, newest first (open ones by default)",
            add="add_list_arguments", main="list_alerts")
    command(alerts, "ack", "services.cli.alerts", "acknowledge an alert: someone is on it",
            add="add_ack_arguments", main="acknowledge")
    command(alerts, "watch", "services.cli.alert_watch", "print alert events from the Redis stream as they come "
            "(a consumer group: at least once, resumes after a restart)")
    command(sub, "audit", "services.cli.audit", "the audit log: who changed what, when, and how it ended")
    command(sub, "webhooks", "services.cli.webhooks", "webhooks for alert events: add, list, deliveries, retry, delete")

    # certfleet trustpoint show|csr|import|export|re-enroll|refresh|delete, certfleet device weak-crypto
    import_module("services.cli.operator").add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
