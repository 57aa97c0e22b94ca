"""EST floor: what the CA simulator alone costs per enrollment on this machine, for the fleet
benchmark to be judged against (bench/fleet.py --floor).

``certfleet ca serve`` (an RSA-2048 CA, basic auth) in its own process, and one asyncio loop
in this one enrolling N devices, 64 at a time, straight at the CA: no queue, no database, no
device simulator. Each device opens its own TLS connection (trusting the CA's tls-ca.pem), asks
``/.well-known/est/cacerts``, makes a new P-256 key and a CSR and posts it to
``/.well-known/est/simpleenroll``; the answer must be a certs-only PKCS#7 holding a certificate
for that key. Prints one JSON line: throughput, failures, CPU of the CA and of this driver, the
machine's CPU per enrollment and its crypto speed. Exits 1 when an enrollment failed.

The client is a lean one (bench/est_wire.py), not httpx: httpx spent more CPU per enrollment than
the CA it drove, so the client set the pace. ``cpu_ms_per_enrollment`` shows the driver's share
next to the CA's: with the driver below the CA, the CA sets the pace.

    .venv/bin/python bench/est_floor.py                      # 5,000 devices
    .venv/bin/python bench/est_floor.py --devices 2000 --ca-processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from bench.crypto_speed import crypto_timings  # noqa: E402
from bench.est_wire import EstConnection, EstFailure  # noqa: E402
from bench.machine import cpu_seconds, machine_busy_seconds  # noqa: E402
from bench.stopping import stoppable  # noqa: E402
from shared.errors import CertfleetError  # noqa: E402
from shared.protocols.est import CERTS_ONLY, decode_certs_only, encode_csr, media_type  # noqa: E402
from tests.support.procs import Proc  # noqa: E402

EST_USER, EST_PASSWORD = "bench-enroller", "Bench-Est-Password-7"
#: Failures printed word for word; the rest are only counted.
SHOWN_FAILURES = 5
#: A device that has not enrolled by then counts as failed.
ENROLLMENT_TIMEOUT_S = 60


def start_ca(logs: Path, cleanup: ExitStack, *, processes: int = 1) -> tuple[Proc, str]:
    """``certfleet ca serve`` with a new RSA-2048 CA, stopped by ``cleanup``; its EST URL.
    ``--processes`` goes to the CA only above 1, so a CA without that option serves one."""
    env = {**os.environ, "CERTFLEET_CA_EST_PASSWORD": EST_PASSWORD, "CERTFLEET_LOG_LEVEL": "WARNING"}
    serve = ["ca", "serve", "--state-dir", str(logs / "ca"), "--est-port", "0", "--est-user", EST_USER,
             "--key-type", "rsa"]
    if processes > 1:
        serve += ["--processes", str(processes)]
    ca = Proc("ca", serve, env, logs)
    cleanup.callback(ca.stop)
    url = ca.wait_for_line(r"ca ready: est=(\S+)").group(1)
    return ca, url


def certificates(answer: tuple[int, dict[str, str], bytes], what: str) -> list[x509.Certificate]:
    """The certificates of a certs-only PKCS#7 answer; EstFailure for anything else."""
    status, headers, body = answer
    if status != 200:
        raise EstFailure(f"{what}: HTTP {status} {body[:200]!r}")
    if media_type(headers.get("content-type")) != media_type(CERTS_ONLY):
        raise EstFailure(f"{what}: Content-Type {headers.get('content-type')!r}, not {CERTS_ONLY}")
    try:
        certs = decode_certs_only(body)
    except CertfleetError as exc:
        raise EstFailure(f"{what}: {exc}") from None
    if not certs:
        raise EstFailure(f"{what}: the PKCS#7 holds no certificate")
    return certs


async def enroll(device: int, host: str, port: int, tls: ssl.SSLContext) -> None:
    """One device's enrollment on a connection of its own, as a device makes it."""
    async with asyncio.timeout(ENROLLMENT_TIMEOUT_S):
        connection = await EstConnection.open(host, port, tls)
        try:
            certificates(await connection.get("/.well-known/est/cacerts"), "cacerts")
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"floor-device-{device}")]))
                   .sign(key, hashes.SHA256()))
            answer = await connection.post_csr("/.well-known/est/simpleenroll", encode_csr(csr),
                                               user=EST_USER, password=EST_PASSWORD)
            if certificates(answer, "simpleenroll")[0].public_key() != key.public_key():
                raise EstFailure("simpleenroll: the certificate is not for the key the request carried")
        finally:
            await connection.close()


async def enroll_all(devices: int, concurrency: int, url: str, tls: ssl.SSLContext) -> list[str]:
    """Every device enrolled, ``concurrency`` at a time; what each failure said."""
    where = urlsplit(url)
    failures: list[str] = []
    pending = iter(range(devices))

    async def lane() -> None:
        for device in pending:  # one iterator shared by the lanes: each device is taken once
            try:
                await enroll(device, where.hostname, where.port, tls)
            except (EstFailure, OSError, EOFError, TimeoutError, ValueError) as exc:
                failures.append(f"device {device}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return failures


def run_floor(devices: int = 5000, concurrency: int = 64, *, ca_processes: int = 1) -> dict:
    """Start the CA, enroll ``devices`` straight at it and stop it; the figures as a dict."""
    crypto = crypto_timings()
    with tempfile.TemporaryDirectory() as logs, ExitStack() as cleanup:
        ca, url = start_ca(Path(logs), cleanup, processes=ca_processes)
        tls = ssl.create_default_context(cafile=str(Path(logs) / "ca" / "tls-ca.pem"))
        # From here on: the CA's start-up (its keys, its imports) is not the enrollments' cost.
        ca_before, driver_before, busy_before = cpu_seconds(ca.popen.pid), time.process_time(), machine_busy_seconds()
        started = time.monotonic()
        failures = asyncio.run(enroll_all(devices, concurrency, url, tls))
        seconds = time.monotonic() - started
        busy = machine_busy_seconds() - busy_before
        driver = time.process_time() - driver_before
        ca_cpu = cpu_seconds(ca.popen.pid) - ca_before
    for failure in failures[:SHOWN_FAILURES]:
        progress(failure)
    succeeded = devices - len(failures)
    return {
        "benchmark": "est_floor",
        "devices": devices,
        "failed": len(failures),
        "seconds": round(seconds, 2),
        "enrollments_per_second": round(succeeded / seconds, 1),
        "concurrency": concurrency,
        "ca_processes": ca_processes,
        "cpu_seconds": {"ca": round(ca_cpu, 2), "driver": round(driver, 2)},
        # rest: what the machine spent besides the CA and the driver (anything else running on it).
        "cpu_ms_per_enrollment": {"ca": round(ca_cpu * 1000 / devices, 3), "driver": round(driver * 1000 / devices, 3),
                                  "rest": round((busy - ca_cpu - driver) * 1000 / devices, 3)},
        "machine_cpu_ms_per_enrollment": round(busy * 1000 / devices, 3),
        "crypto": crypto,
    }


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64, help="devices enrolling at once")
    parser.add_argument("--ca-processes", type=int, default=1, metavar="N",
                        help="CA simulator processes (passed to `ca serve --processes` when above 1)")
    args = parser.parse_args()
    if args.devices < 1 or args.concurrency < 1 or args.ca_processes < 1:
        parser.error("--devices, --concurrency and --ca-processes must be at least 1")
    result = run_floor(args.devices, args.concurrency, ca_processes=args.ca_processes)
    print(json.dumps(result), flush=True)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(stoppable(main))
