"""Device health benchmark: one health pass over N simulated devices (default 50,000, 5% of them
with an expired default keyring), as the ``device-health`` schedule runs it every 5 minutes.

The device simulator runs as its own process (``certfleet device-sim``), the workers as the
dramatiq CLI runs them for ``certfleet worker`` (:mod:`bench.health_worker`: the same actors,
their Redis keys under the namespace ``bench-health`` of Redis database 0, removed at the start
and the end), the database is a throwaway PostgreSQL one with the devices registered in it. This
process runs the pass (:func:`run_health_pass`: device ids read in keyset pages and published in
batches) and waits until every device's health is recorded.

The first pass also has the simulator make every device's keyring (a key pair and a certificate:
the simulator's cost, not certfleet's); the second is what every later interval costs, and is the
one judged (``--passes 1`` judges the first). CPU is read per process from /proc/<pid>/stat: the
worker processes, this process's publishing, and the PostgreSQL backends serving the benchmark's
database make certfleet's share. Redis's and the whole machine's are shown too, but other users
of this machine and of its Redis server add to them. The verdict: the pass ends within the
interval and certfleet's CPU for it stays within a third of the machine's CPU over the interval
(at the measured size, and scaled linearly to 50,000 devices when fewer were run).

Progress goes to stderr, the result (one JSON line) to stdout.

    .venv/bin/python bench/health.py                    # 50,000 devices
    .venv/bin/python bench/health.py --devices 5000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlmodel import Session  # noqa: E402

from bench.stopping import stoppable  # noqa: E402
from services.controller.scheduling.health_pass import run_health_pass  # noqa: E402
from shared.broker import make_broker  # noqa: E402
from shared.db import init_db, make_engine  # noqa: E402
from shared.events import BULK_QUEUE  # noqa: E402
from shared.models import GLOBAL_DOMAIN_ID, Device  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.support.pg import fresh_database  # noqa: E402
from tests.support.procs import ROOT, TEST_SECRET_KEY, Proc, free_port  # noqa: E402

REDIS_URL = os.environ.get("CERTFLEET_BENCH_HEALTH_REDIS_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = "bench-health"
INTERVAL_S = 300
#: Share of the machine's CPU a health pass may use over its interval.
CPU_SHARE = 1 / 3
TARGET_DEVICES = 50_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- CPU, per process -----------------------------------------------------------------------------

def own_cpu(pid: int) -> float:
    """User + system CPU seconds of one live process (its reaped children included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / CLOCK_TICKS


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def tree_cpu(pid: int) -> dict[int, float]:
    return {p: own_cpu(p) for p in tree(pid)}


def delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two readings; a process born in between counts whole."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def backends(engine: sa.Engine, database: str) -> dict[int, float]:
    """CPU of the PostgreSQL backends serving ``database`` (the workers' and this process's pools)."""
    with engine.connect() as conn:
        pids = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :db"), {"db": database}).scalars()
        return {pid: own_cpu(pid) for pid in pids}


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def machine_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


# --- the parts ------------------------------------------------------------------------------------

def clear_namespace(client: redis.Redis) -> None:
    for key in client.scan_iter(f"{NAMESPACE}:*", count=1000):
        client.delete(key)


def register(engine: sa.Engine, sim_url: str, count: int) -> None:
    now = datetime.now(UTC)
    rows = [dict(id=uuid.uuid4(), domain_id=GLOBAL_DOMAIN_ID, name=f"ftd-{i:06d}", model="FTDv",
                 serial=f"FTD-{i:06d}", ip_address="", fqdn=f"ftd-{i:06d}.fleet.example",
                 management_url=f"{sim_url}/api/devices/FTD-{i:06d}", weak_crypto=False, bundle_version="",
                 created_at=now) for i in range(1, count + 1)]
    with Session(engine) as session:
        for start in range(0, count, 5000):
            session.execute(sa.insert(Device), rows[start:start + 5000])
        session.commit()


class Workers:
    """The dramatiq CLI on :mod:`bench.health_worker`, in a session of its own."""

    def __init__(self, env: dict[str, str], logs: Path, *, processes: int, threads: int) -> None:
        self.log_path = logs / "workers.log"
        self.log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "bench.health_worker", "--processes", str(processes),
             "--threads", str(threads), "--queues", BULK_QUEUE],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes = processes

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.log_path.read_text(errors="replace").count("ready for action") < self.processes:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()


def health_pass(engine: sa.Engine, broker, settings: Settings, devices: int, *, timeout: float) -> dict:
    """Publish one pass; wait until every device's health is recorded after it started."""
    started_at = datetime.now(UTC)
    started = time.monotonic()
    publishing = time.process_time()
    with Session(engine) as session:
        result = run_health_pass(session, broker, settings=settings)
    publish_cpu = time.process_time() - publishing
    published = time.monotonic() - started
    query = sa.text("SELECT count(*), max(health_checked_at) FROM device WHERE health_checked_at >= :t")
    while True:
        with engine.connect() as conn:
            done, last = conn.execute(query, {"t": started_at}).one()
        if done >= devices:
            break
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"only {done} of {devices} devices checked after {timeout:g} s")
        time.sleep(0.2)
    with engine.connect() as conn:
        invalid, errors = conn.execute(sa.text(
            "SELECT count(*) FILTER (WHERE keyring_valid IS FALSE), count(*) FILTER (WHERE health_error IS NOT NULL) "
            "FROM device")).one()
    return {"batches": result.batches, "publish_seconds": round(published, 2), "publish_cpu_seconds": publish_cpu,
            "wall_seconds": round((last - started_at).total_seconds(), 2), "invalid_keyrings": invalid,
            "health_errors": errors}


def run(devices: int, *, expired: float, processes: int, threads: int, passes: int, batch_size: int) -> dict:
    client = redis.Redis.from_url(REDIS_URL)
    clear_namespace(client)
    cores = os.cpu_count() or 1
    with fresh_database() as database_url, tempfile.TemporaryDirectory() as logs, ExitStack() as cleanup:
        settings = Settings(database_url=database_url, broker_url=REDIS_URL, health_batch_size=batch_size,
                            health_check_seconds=INTERVAL_S, log_level="WARNING")
        engine = make_engine(settings)
        cleanup.callback(engine.dispose)
        init_db(engine)
        env = {**os.environ, "CERTFLEET_SECRET_KEY": TEST_SECRET_KEY,
               "CERTFLEET_DATABASE_URL": database_url, "CERTFLEET_BROKER_URL": REDIS_URL,
               "CERTFLEET_LOG_LEVEL": "WARNING", "BENCH_HEALTH_NAMESPACE": NAMESPACE, "PYTHONPATH": str(ROOT)}
        sim = Proc("device-sim", ["device-sim", "--devices", str(devices), "--port", str(free_port()),
                                  "--expired-keyrings", str(expired)], env, Path(logs))
        cleanup.callback(sim.stop)
        sim_url = sim.wait_for_line(r"device-sim ready: (\S+)").group(1)
        register(engine, sim_url, devices)
        workers = Workers(env, Path(logs), processes=processes, threads=threads)
        cleanup.callback(workers.stop)
        workers.wait_ready()
        broker = make_broker(settings)
        broker.namespace = NAMESPACE
        cleanup.callback(broker.close)
        progress(f"{devices} devices registered; simulator {sim_url}; {processes} worker processes x {threads} "
                 f"threads")
        database = database_url.rsplit("/", 1)[1]
        runs = []
        for number in range(1, passes + 1):
            before = {"workers": tree_cpu(workers.popen.pid), "sim": tree_cpu(sim.popen.pid),
                      "postgres": backends(engine, database)}
            redis_before, machine_before = redis_cpu(client), machine_busy()
            outcome = health_pass(engine, broker, settings, devices, timeout=4 * INTERVAL_S)
            cpu = {"workers": delta(before["workers"], tree_cpu(workers.popen.pid)),
                   "postgres_backends": delta(before["postgres"], backends(engine, database)),
                   "publisher": outcome.pop("publish_cpu_seconds")}
            certfleet = sum(cpu.values())
            machine = machine_busy() - machine_before
            runs.append({
                "pass": number, "keyrings_made_by_the_simulator": number == 1, **outcome,
                "cpu_seconds": {name: round(value, 2) for name, value in cpu.items()},
                "certfleet_cpu_seconds": round(certfleet, 2),
                "certfleet_cpu_ms_per_device": round(certfleet * 1000 / devices, 3),
                "simulator_cpu_seconds": round(delta(before["sim"], tree_cpu(sim.popen.pid)), 2),
                "redis_server_cpu_seconds_shared": round(redis_cpu(client) - redis_before, 2),
                "machine_cpu_seconds_all_users": round(machine, 2),
                "machine_cpu_ms_per_device_all_users": round(machine * 1000 / devices, 3),
            })
            progress(f"pass {number}: {json.dumps(runs[-1])}")
    clear_namespace(client)
    judged = runs[-1]
    return {"benchmark": "device_health_pass", "devices": devices, "expired_fraction": expired,
            "worker_processes": processes, "threads_per_worker": threads, "batch_size": batch_size,
            "cores": cores, "passes": runs, "verdict": verdict(judged, devices=devices, cores=cores)}


def verdict(judged: dict, *, devices: int, cores: int) -> dict:
    """Whether a pass fits its interval at a third of the machine's CPU, as measured and at 50,000 devices."""
    budget = cores * INTERVAL_S * CPU_SHARE
    scale = TARGET_DEVICES / devices
    wall, cpu = judged["wall_seconds"], judged["certfleet_cpu_seconds"]
    return {
        "interval_seconds": INTERVAL_S, "cpu_budget_seconds": round(budget, 1),
        "measured_fits": wall <= INTERVAL_S and cpu <= budget,
        f"at_{TARGET_DEVICES}_devices": {
            "wall_seconds": round(wall * scale, 1), "certfleet_cpu_seconds": round(cpu * scale, 1),
            "scaled_from": devices if scale != 1 else None,
            "fits": wall * scale <= INTERVAL_S and cpu * scale <= budget},
        "share_of_machine_cpu": round(cpu / (cores * INTERVAL_S), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=TARGET_DEVICES)
    parser.add_argument("--expired", type=float, default=0.05, help="share of keyrings expired (default 0.05)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    parser.add_argument("--batch-size", type=int, default=Settings().health_batch_size)
    parser.add_argument("--passes", type=int, default=2, help="passes to run; the last is judged (default 2)")
    args = parser.parse_args()
    result = run(args.devices, expired=args.expired, processes=args.workers, threads=args.threads,
                 passes=max(args.passes, 1), batch_size=args.batch_size)
    print(json.dumps(result), flush=True)
    return 0 if result["verdict"][f"at_{TARGET_DEVICES}_devices"]["fits"] else 1


if __name__ == "__main__":
    sys.exit(stoppable(main))
