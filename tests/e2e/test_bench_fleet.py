"""``bench/fleet.py`` stopped with SIGTERM, as a CI job's timeout or a process manager stops it:
every process it started (CA, device simulator, controller, worker processes and their forks,
the ``certfleet enroll`` it runs) is gone when it exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.support.pg import postgres_or_skip
from tests.support.procs import ROOT

#: The benchmark flushes the Redis database it runs on: this one, the test's own.
REDIS_URL = "redis://127.0.0.1:6379/3"


def descendants(pid: int) -> dict[int, tuple[str, str]]:
    """Every process below ``pid``: its start time (to tell a reused pid apart) and command line."""
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            for child in children:
                identity = _identity(child)
                if identity is not None:
                    found[child] = identity
                    todo.append(child)
    return found


def _identity(pid: int) -> tuple[str, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited, waiting to be reaped: not running
        return None
    return fields[19], cmdline  # starttime


def still_running(processes: dict[int, tuple[str, str]]) -> dict[int, str]:
    running = {}
    for pid, (started, cmdline) in processes.items():
        now = _identity(pid)
        if now is not None and now[0] == started:
            running[pid] = cmdline
    return running


def wait_for(path: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        assert process.poll() is None, f"the benchmark exited {process.returncode}:\n{path.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} from the benchmark within {timeout} s:\n{path.read_text()}")


def test_sigterm_stops_every_process_the_benchmark_started(tmp_path):
    postgres_or_skip()
    redis.Redis.from_url(REDIS_URL).ping()
    stderr = tmp_path / "bench.err"
    # Slow devices: the run is still enrolling when the signal comes.
    with stderr.open("wb") as err:
        bench = subprocess.Popen(
            [sys.executable, "bench/fleet.py", "--enrollment", "est", "--devices", "10", "--latency-ms", "5000",
             "--workers", "1", "--threads", "2"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "CERTFLEET_BENCH_REDIS_URL": REDIS_URL},
            stdout=subprocess.PIPE, stderr=err,
        )
    started: dict[int, tuple[str, str]] = {}
    try:
        wait_for(stderr, "bench: enrolling 10 devices", bench, timeout=90)
        started = descendants(bench.pid)
        commands = " | ".join(cmdline for _, cmdline in started.values())
        for part in ("ca serve", "device-sim", "controller", "worker", "enroll --object bench-est"):
            assert part in commands, commands
        bench.send_signal(signal.SIGTERM)
        out, _ = bench.communicate(timeout=60)
        assert still_running(started) == {}
        assert bench.returncode == 128 + signal.SIGTERM, stderr.read_text()
        assert "stopped by SIGTERM; every process it started is stopped" in stderr.read_text()
        assert out == b""  # no result line for a run that did not finish
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for pid in still_running(started):  # a failed run leaves nothing behind either
            os.kill(pid, signal.SIGKILL)
        # A run stopped midway leaves its queues, heartbeats and CA gate state: the test's own database.
        redis.Redis.from_url(REDIS_URL).flushdb()
