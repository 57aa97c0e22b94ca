"""The ``certfleet`` command. Each subcommand lives with its service; this module only
wires them together and imports a service when its subcommand runs."""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib import import_module
from pathlib import Path

from shared.errors import ConfigurationError


def _api_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", default=os.environ.get("CERTFLEET_API_URL", "http://127.0.0.1:8000"),
                        help="controller URL (env CERTFLEET_API_URL)")
    parser.add_argument("--token", default=os.environ.get("CERTFLEET_TOKEN", ""),
                        help="API token (env CERTFLEET_TOKEN)")


def _demo(args: argparse.Namespace) -> int:
    from services.cli.demo import run_demo

    return run_demo(devices=args.devices, key_type=args.key_type, key_size=args.key_size,
                    threads=args.threads, enrollment=args.enrollment)


def _up(args: argparse.Namespace) -> int:
    from services.stack.embedded import EmbeddedStack
    from shared.settings import Settings

    state_dir = Path(args.state_dir)
    stack = EmbeddedStack(Settings.from_env(), devices=args.devices, api_port=args.port,
                          state_dir=state_dir, worker_threads=args.threads).start()
    from services.cli.api_client import CertfleetClient

    with CertfleetClient(stack.api_url, stack.admin_token) as client:
        imported = client.import_devices(stack.sim.url)["imported"]
    token_file = state_dir / "admin-token"
    token_file.write_text(stack.admin_token + "\n")
    token_file.chmod(0o600)
    print(f"certfleet is up: API {stack.api_url}/api/v1  device simulator {stack.sim.url} "
          f"({imported} new devices imported into Global)", flush=True)
    print(f"admin token: {stack.admin_token}  (also in {token_file})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


def _devices_import(args: argparse.Namespace) -> int:
    from services.cli.api_client import ApiError, CertfleetClient

    with CertfleetClient(args.api_url, args.token) as client:
        try:
            result = client.import_devices(args.from_sim, domain_id=args.domain)
        except ApiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"imported {result['imported']} devices, skipped {result['skipped']} already known")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certfleet", description="Certificate lifecycle for device fleets")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="enroll a simulated fleet end to end in one process")
    demo.add_argument("--devices", type=int, default=500)
    demo.add_argument("--key-type", default="ecdsa", choices=["rsa", "ecdsa", "eddsa"])
    demo.add_argument("--key-size", type=int, default=256)
    demo.add_argument("--threads", type=int, default=8, help="worker threads")
    demo.add_argument("--enrollment", default="self-signed", choices=["self-signed", "est", "scep", "mixed"],
                      help="how the devices enroll: self-signed (default), est or scep with the CA simulator, "
                      "or mixed (a third each)")
    demo.set_defaults(func=_demo)

    up = sub.add_parser("up", help="run the embedded stack and leave it serving the API")
    up.add_argument("--devices", type=int, default=100)
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--state-dir", default="./certfleet-state")
    up.add_argument("--threads", type=int, default=8)
    up.set_defaults(func=_up)

    for name, module, help_text in (
        ("controller", "services.controller.cli", "serve the REST API (and the reconciler)"),
        ("worker", "services.worker.cli", "run Dramatiq worker processes"),
        ("device-sim", "services.device_sim.cli", "serve a simulated device fleet"),
        ("ca", "services.ca_sim.cli", "CA simulator (EST and SCEP)"),
        ("db", "services.cli.db", "database schema: certfleet db upgrade"),
    ):
        p = sub.add_parser(name, help=help_text)
        mod = import_module(module)
        mod.add_arguments(p)
        p.set_defaults(func=mod.main)

    enroll = sub.add_parser("enroll", help="install an enrollment object on many devices and follow it")
    enroll_cli = import_module("services.cli.enroll")
    enroll_cli.add_arguments(enroll)
    _api_args(enroll)
    enroll.set_defaults(func=enroll_cli.main)

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token and print it")
    tokens_cli = import_module("services.controller.cli")
    tokens_cli.add_token_arguments(create)
    create.set_defaults(func=tokens_cli.token_create)

    devices = sub.add_parser("devices", help="devices")
    devices_sub = devices.add_subparsers(dest="devices_command", required=True)
    imp = devices_sub.add_parser("import", help="register a fleet's devices in a domain")
    imp.add_argument("--from-sim", required=True, metavar="URL", help="device simulator URL")
    imp.add_argument("--domain", default="e276abec-e0f2-11e3-8169-6d9ed49b625f", help="domain id (default Global)")
    _api_args(imp)
    imp.set_defaults(func=_devices_import)

    # certfleet trustpoint show|csr|import|export|re-enroll|refresh|delete, certfleet device weak-crypto
    import_module("services.cli.operator").add_commands(sub, _api_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigurationError as exc:  # settings or a database this version cannot use
        print(f"error: {exc.code}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
