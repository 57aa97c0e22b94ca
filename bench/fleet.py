"""Fleet enrollment benchmark: the multi-process stack (Redis, PostgreSQL, two worker
processes, the device simulator with 20 ms latency per request) enrolling N devices with
P-256 self-signed trustpoints, started as one bulk enrollment through the API. Prints one
JSON line per run.

    make bench                                  # 5,000 devices
    .venv/bin/python bench/fleet.py --devices 2000 --devices 20000   # scaling check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from services.api_client import CertfleetClient  # noqa: E402
from tests.pg import fresh_database  # noqa: E402
from tests.procs import Stack  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/14"


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def peak_rss_mib(pid: int) -> float:
    """Largest VmHWM among the process and its children (dramatiq forks its workers)."""
    peak = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return round(peak / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and its children (live and reaped)."""
    ticks = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        except OSError:
            pass
    return round(ticks / 100, 1)


def run(devices: int, *, latency_ms: int, workers: int, threads: int) -> dict:
    redis.Redis.from_url(REDIS_URL).flushdb()
    with fresh_database() as database_url, tempfile.TemporaryDirectory() as logs:
        stack = Stack(database_url=database_url, broker_url=REDIS_URL, log_dir=Path(logs), devices=devices,
                      workers=workers, threads=threads, sim_args=["--latency-ms", str(latency_ms)])
        with stack, CertfleetClient(stack.api_url, stack.token) as client:
            client.import_devices(stack.sim_url)
            obj = client.create_enrollment_object(name="bench", enrollment_type="self_signed",
                                                  key_type="ecdsa", key_size=256, organization="bench")
            started = time.monotonic()
            batch = client.start_bulk_enrollment(obj["id"], selection={"all": True})
            published = time.monotonic() - started
            list_latencies = []
            while not batch["finished"]:
                time.sleep(0.2)
                t0 = time.perf_counter()
                client.trustpoints_page(limit=100)  # what a dashboard polls while the batch runs
                list_latencies.append(time.perf_counter() - t0)
                batch = client.bulk_enrollment(batch["id"])
            seconds = time.monotonic() - started
            rss = {p.name: peak_rss_mib(p.popen.pid) for p in stack.procs}
            cpu = {p.name: cpu_seconds(p.popen.pid) for p in stack.procs}
            failed = batch["failed"]
        engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT EXTRACT(EPOCH FROM finished_at - created_at) FROM job WHERE state = 'succeeded'"
            )).scalars().all()
        engine.dispose()
    redis.Redis.from_url(REDIS_URL).flushdb()
    latencies = sorted(float(r) for r in rows)
    return {
        "benchmark": "fleet_self_signed_enrollment",
        "devices": devices,
        "failed": failed,
        "seconds": round(seconds, 2),
        "publish_seconds": round(published, 2),
        "enrollments_per_second": round(devices / seconds, 1),
        "cost_ms_per_device": round(seconds * 1000 / devices, 3),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p99_s": round(latencies[int(len(latencies) * 0.99) - 1], 3),
        "list_api_p99_ms": round(sorted(list_latencies)[int(len(list_latencies) * 0.99) - 1] * 1000, 1)
        if list_latencies else None,
        "peak_rss_mib": rss,
        "cpu_seconds": cpu,
        "device_latency_ms": latency_ms,
        "worker_processes": workers,
        "threads_per_worker": threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, action="append", help="fleet size (repeat for a scaling run)")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    results = [run(n, latency_ms=args.latency_ms, workers=args.workers, threads=args.threads)
               for n in (args.devices or [5000])]
    for result in results:
        print(json.dumps(result), flush=True)
    if len(results) > 1:
        small, large = results[0], results[-1]
        ratio = large["cost_ms_per_device"] / small["cost_ms_per_device"]
        print(json.dumps({"benchmark": "fleet_scaling", "from_devices": small["devices"],
                          "to_devices": large["devices"], "cost_per_device_ratio": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
