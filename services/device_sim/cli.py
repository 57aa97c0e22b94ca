"""``certfleet device-sim``: serve a simulated device fleet until interrupted.

A refusal is a shared error (:mod:`shared.failures` prints it): exit 2 for a bad setting,
exit 1 when the address cannot be listened on.
"""

from __future__ import annotations

import argparse
import os

from services.device_sim.config import SimConfig
from shared.errors import CertfleetError, ConfigurationError

#: Where the fleet's credential key comes from when no file is named.
CREDENTIAL_KEY_ENV = "CERTFLEET_DEVICE_CREDENTIAL_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8400,
                        help="port to listen on (default 8400; 0 picks a free one)")
    parser.add_argument("--processes", type=int, default=1,
                        help="serving processes (default 1): device FTD-n is served by process (n - 1) %% N, the "
                        "first on --port, the others on free ports; any of them lists the whole fleet")
    parser.add_argument("--public-url", help="URL workers reach this simulator at, if not the listening "
                        "address (e.g. http://device-sim:8400 in a container); with --processes N, N URLs, "
                        "comma-separated, in process order")
    parser.add_argument("--seed", type=int, default=1, help="seed for models, faults and expired keyrings")
    latency = parser.add_argument_group("latency per device request")
    latency.add_argument("--latency-ms", type=float, default=0.0, help="fixed latency")
    latency.add_argument("--latency-min-ms", type=float, help="uniform latency range: lower bound")
    latency.add_argument("--latency-max-ms", type=float, help="uniform latency range: upper bound")
    faults = parser.add_argument_group("injected faults (fractions 0..1)")
    faults.add_argument("--error-rate", type=float, default=0.0, help="requests answered 500 device_error")
    faults.add_argument("--timeout-rate", type=float, default=0.0,
                        help="requests held --hang-seconds, then answered 504")
    faults.add_argument("--hang-seconds", type=float, default=30.0,
                        help="how long a timed-out request is held (default 30)")
    faults.add_argument("--unreachable-rate", type=float, default=0.0,
                        help="devices (chosen by seed) answering every request 503 device_unreachable")
    faults.add_argument("--expired-keyrings", type=float, default=0.0, metavar="FRACTION",
                        help="devices (chosen by seed) whose default keyring certificate has expired")
    ca = parser.add_argument_group("reaching CA servers (EST, SCEP)")
    ca.add_argument("--trust-anchor", action="append", default=[], metavar="FILE",
                    help="PEM certificate(s) the devices trust for HTTPS CA servers, e.g. the CA simulator's "
                    "DIR/tls-ca.pem; repeat for more")
    ca.add_argument("--ca-wait-seconds", type=float, default=4.0,
                    help="how long one enrollment keeps asking a CA that holds its request before it reports "
                    "the identity certificate pending and goes on asking in the background (default 4)")
    ca.add_argument("--scep-minute-seconds", type=float, default=60.0, metavar="SECONDS",
                    help="length of a minute in SCEP retry periods (default 60; e.g. 0.5 in tests, so that a "
                    "1-minute retry period polls every half second)")
    trust = parser.add_argument_group("endpoint credentials")
    trust.add_argument("--credential-key-file", metavar="FILE",
                       help="file holding the fleet key every device's endpoint credential is derived from "
                       f"(HMAC-SHA256(key, serial)); default ${CREDENTIAL_KEY_ENV}, else a random key per run. "
                       "The inventory hands the credentials out: an admin's import stores them")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        devices=args.devices, host=args.host, port=args.port, processes=args.processes, seed=args.seed,
        public_url=args.public_url,
        latency_ms=args.latency_ms, latency_min_ms=args.latency_min_ms, latency_max_ms=args.latency_max_ms,
        error_rate=args.error_rate, timeout_rate=args.timeout_rate, hang_seconds=args.hang_seconds,
        unreachable_rate=args.unreachable_rate, expired_keyrings=args.expired_keyrings,
        trust_anchors=tuple(args.trust_anchor), ca_wait_seconds=args.ca_wait_seconds,
        scep_minute_seconds=args.scep_minute_seconds, credential_key=_credential_key(args.credential_key_file),
    )


def _credential_key(path: str | None) -> str:
    """The fleet key from ``path`` (its first line), else the environment, else "" (a random one)."""
    if path is None:
        return os.environ.get(CREDENTIAL_KEY_ENV, "").strip()
    try:
        with open(path, encoding="utf-8") as file:
            key = file.readline().strip()
    except OSError as exc:
        raise ConfigurationError(f"--credential-key-file {path}: {exc.strerror or exc}") from None
    if not key:
        raise ConfigurationError(f"--credential-key-file {path} holds no key on its first line")
    return key


def main(args: argparse.Namespace) -> int:
    # Loaded when the simulator runs: `certfleet --help` and the other commands start faster without.
    from services.device_sim.server import run
    from shared.logging import configure_logging
    from shared.settings import Settings

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    config = config_from_args(args)  # ConfigurationError for a value out of range
    try:
        run(config)  # ConfigurationError too, e.g. for a trust anchor file that holds no certificate
    except OSError as exc:
        raise CertfleetError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
                             code="cannot_listen") from None
    return 0
