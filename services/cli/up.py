"""``certfleet up``: run the embedded stack (controller API, reconciler, worker threads, device
simulator) and leave it serving the API until Ctrl-C, with the simulated fleet imported into
the Global domain and an admin token written to the state directory."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from services.cli.arguments import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=positive_int, default=100, help="simulated devices (default 100)")
    parser.add_argument("--port", type=int, default=8000, help="API port (default 8000; 0 picks a free one)")
    parser.add_argument("--state-dir", default="./certfleet-state",
                        help="database, CA and admin token (default ./certfleet-state)")
    parser.add_argument("--threads", type=positive_int, default=8, help="worker threads (default 8)")


def main(args: argparse.Namespace) -> int:
    # The whole stack is imported only when it runs: other commands start faster without it.
    from services.cli.api_client import CertfleetClient
    from services.stack.embedded import EmbeddedStack
    from shared.settings import Settings

    state_dir = Path(args.state_dir)
    stack = EmbeddedStack(Settings.from_env(), devices=args.devices, api_port=args.port,
                          state_dir=state_dir, worker_threads=args.threads).start()
    try:
        with CertfleetClient(stack.api_url, stack.admin_token) as client:
            imported = client.import_devices(stack.sim.url)["imported"]
        token_file = state_dir / "admin-token"
        token_file.write_text(stack.admin_token + "\n")
        token_file.chmod(0o600)
        print(f"certfleet is up: API {stack.api_url}/api/v1  device simulator {stack.sim.url} "
              f"({imported} new devices imported into Global)", flush=True)
        print(f"admin token: {stack.admin_token}  (also in {token_file})", flush=True)
        if stack.settings.uses_development_key:
            # Fine for this local stack; said so that nobody keeps real secrets under a public key.
            print("stored secrets are encrypted with the development key: set CERTFLEET_SECRET_KEY for "
                  "real ones", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
