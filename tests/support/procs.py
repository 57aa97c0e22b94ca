"""Start certfleet services as separate processes on loopback, for end-to-end tests
and the benchmark."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A certfleet subcommand in its own process, its output kept in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output())
            if match:
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not print {pattern!r}:\n{self.output()[-3000:]}")

    def kill(self, sig: int = 15) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15) -> None:
        self.kill()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(9)
            self.popen.wait(5)
        self.log.close()


def ca_ready_urls(ca: Proc, timeout: float = 60) -> dict[str, list[str]]:
    """The URLs on the ready line of ``certfleet ca serve`` by protocol, e.g. ``{"est": [...],
    "scep": [...]}`` (``ca ready: est=URL [est=URL …] [scep=URL …] state=DIR``)."""
    served = ca.wait_for_line(r"ca ready: ((?:\w+=\S+ )+)state=", timeout).group(1)
    urls: dict[str, list[str]] = {}
    for item in served.split():
        protocol, _, url = item.partition("=")
        urls.setdefault(protocol, []).append(url)
    return urls


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def run_cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )
    if done.returncode:
        raise RuntimeError(f"certfleet {' '.join(args)} failed: {done.stderr}")
    return done.stdout


class Stack:
    """Controller, N worker processes and the device simulator, each its own process."""

    def __init__(self, *, database_url: str, broker_url: str, log_dir: Path, devices: int,
                 workers: int = 2, threads: int = 8, sim_args: list[str] | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.env = {
            **os.environ,
            "CERTFLEET_DATABASE_URL": database_url,
            "CERTFLEET_BROKER_URL": broker_url,
            "CERTFLEET_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        self.log_dir, self.devices, self.workers, self.threads = log_dir, devices, workers, threads
        self.sim_args = sim_args or []
        self.procs: list[Proc] = []

    def start(self) -> Stack:
        sim_port, api_port = free_port(), free_port()
        sim = Proc("device-sim", ["device-sim", "--devices", str(self.devices), "--port", str(sim_port),
                                  "--seed", "7", *self.sim_args], self.env, self.log_dir)
        self.procs.append(sim)
        sim.wait_for_line(r"device-sim ready")
        self.sim_url = f"http://127.0.0.1:{sim_port}"
        self.token = run_cli(["token", "create", "--role", "admin"], self.env).strip().split()[-1]
        controller = Proc("controller", ["controller", "--host", "127.0.0.1", "--port", str(api_port)],
                          self.env, self.log_dir)
        self.procs.append(controller)
        self.api_url = f"http://127.0.0.1:{api_port}"
        wait_http(self.api_url + "/healthz")
        for i in range(self.workers):
            env = {**self.env, "CERTFLEET_WORKER_METRICS_PORT": str(free_port())}
            self.procs.append(Proc(f"worker-{i}", ["worker", "--processes", "1", "--threads",
                                                   str(self.threads)], env, self.log_dir))
        return self

    def worker_procs(self) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith("worker")]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
