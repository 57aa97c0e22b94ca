"""Start certfleet services as separate processes on loopback, for end-to-end tests
and the benchmark."""

from __future__ import annotations

import atexit
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
#: The secret key of the services tests start: they refuse to run with the development key.
TEST_SECRET_KEY = "certfleet-test-suite-secret-key"


def with_test_key(env: dict[str, str]) -> dict[str, str]:
    """``env`` with :data:`TEST_SECRET_KEY` unless it names a key of its own."""
    return {"CERTFLEET_SECRET_KEY": TEST_SECRET_KEY, **env}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A certfleet subcommand in its own process, its output kept in a log file (or, with
    ``program``, another command: ``program + args``).

    The command starts a session of its own, and everything it starts stays in that session,
    even a child in a process group of its own (``certfleet worker`` runs dramatiq so) or one
    whose parent has died. :meth:`stop` ends the whole session, and whatever a test left
    running is stopped when the test process exits.
    """

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, *,
                 program: list[str] | None = None) -> None:
        """``env`` is the command's whole environment; without CERTFLEET_SECRET_KEY it gets
        :data:`TEST_SECRET_KEY`."""
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("wb")
        try:
            self.popen = subprocess.Popen(
                [*(program or [sys.executable, "-m", "services.cli"]), *args],
                cwd=ROOT, env=with_test_key(env), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except BaseException:
            self.log.close()
            raise
        self.stopped = self.terminated = False
        _live.add(self)

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

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Signal the command's process group (a command forwards it to any group of its own)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def session(self) -> list[int]:
        """The live processes of the command's session: itself and all it started."""
        return session_members(self.popen.pid)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, so the command stops as it would in service; SIGKILL to whatever of its
        session is still running ``timeout`` seconds later. Calling it again does nothing."""
        if self.stopped:
            return
        try:
            if not self.terminated:
                self.terminate()
            if not self._session_ends(timeout):
                self._signal_session(signal.SIGKILL)
                self._session_ends(5)
            self.popen.wait(5)
        finally:
            self.stopped = True
            _live.discard(self)
            self.log.close()

    def terminate(self) -> None:
        """SIGTERM, once, without waiting: :meth:`stop` then waits, so several commands can
        shut down at the same time."""
        self.terminated = True
        if self.exited():  # what it started may outlive it: ask them
            self._signal_session(signal.SIGTERM)
        else:
            self.kill()

    def _session_ends(self, timeout: float) -> bool:
        """Whether every process of the session ended within ``timeout`` seconds. All of /proc is
        read again only once the members seen last have ended (a process joins the session only
        when a member forks it): a stack stops several commands at a time, each waited for here."""
        deadline = time.monotonic() + timeout
        members = self.session()
        while members:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
            members = [pid for pid in members if in_session(pid, self.popen.pid)] or self.session()
        return True

    def _signal_session(self, sig: int) -> None:
        for pid in self.session():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


#: Every Proc started and not yet stopped.
_live: set[Proc] = set()


@atexit.register
def _stop_leftovers() -> None:
    """A test process that exits, also after an error or Ctrl-C, leaves none of its Procs behind."""
    for proc in list(_live):
        proc.stop(timeout=5)


def session_members(session: int) -> list[int]:
    """Processes whose session is ``session`` (a session leader's pid), except those that have
    exited and wait to be reaped."""
    return [int(entry.name) for entry in os.scandir("/proc")
            if entry.name.isdigit() and in_session(entry.name, session)]


def in_session(pid: int | str, session: int) -> bool:
    """Whether process ``pid`` runs in session ``session`` and has not exited."""
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:  # gone meanwhile
        return False
    state, _ppid, _group, sid = stat.rsplit(")", 1)[1].split()[:4]
    return int(sid) == session and state not in ("Z", "X")


def ca_ready_urls(ca: Proc, timeout: float = 60) -> dict[str, list[str]]:
    """The URLs on the ready line of ``certfleet ca serve`` by protocol, e.g. ``{"est": [...],
    "scep": [...], "bundle": [...]}`` (``ca ready: est=URL [est=URL …] [scep=URL …] [bundle=URL …] state=DIR``)."""
    served = ca.wait_for_line(r"ca ready: ((?:\w+=\S+ )+)state=", timeout).group(1)
    urls: dict[str, list[str]] = {}
    for item in served.split():
        protocol, _, url = item.partition("=")
        urls.setdefault(protocol, []).append(url)
    return urls


@cache
def _probe() -> httpx.Client:
    """One client for every probe of this process. A new client loads the CA certificates of the
    system (some 30 ms of CPU), and the waits below ask every tenth of a second; without
    keep-alive, each probe still opens a connection of its own, as a probe from outside would."""
    return httpx.Client(timeout=2, limits=httpx.Limits(max_keepalive_connections=0))


def answers_200(url: str) -> bool:
    try:
        return _probe().get(url).status_code == 200
    except httpx.HTTPError:
        return False


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers_200(url):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def wait_ready(checks: list[tuple[Proc, Callable[[], bool]]], timeout: float = 60) -> None:
    """Wait until each process's check passes; RuntimeError with its output as soon as one of
    them exits first, or naming those not ready after ``timeout`` seconds."""
    waiting = list(checks)
    deadline = time.monotonic() + timeout
    while waiting:
        for proc, ready in list(waiting):
            if ready():
                waiting.remove((proc, ready))
            elif proc.exited():
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before it was ready:\n"
                                   f"{proc.output()[-3000:]}")
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"not ready within {timeout} s: {', '.join(p.name for p, _ in waiting)}")
        time.sleep(0.1)


def run_cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=with_test_key(env),
        capture_output=True, text=True, timeout=60,
    )
    if done.returncode:
        raise RuntimeError(f"certfleet {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def admin_token(env: dict[str, str]) -> str:
    """A new admin token in the database ``env`` names, made as ``certfleet token create`` makes
    it (the schema first, on an empty database) but in this process: a second saved per stack."""
    from services.controller.api.auth import create_token
    from shared.db import init_db, make_engine, session_scope
    from shared.enums import Role
    from shared.settings import Settings

    engine = make_engine(Settings.from_env(env))
    try:
        init_db(engine)
        with session_scope(engine) as session:
            token = create_token(session, role=Role.ADMIN, name="test stack")
            session.commit()
    finally:
        engine.dispose()
    return token


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


class Stack:
    """Controllers (one by default), N worker processes and the device simulator, each its own
    process. Every controller serves the API on its own port and runs the reconciler and the
    scheduler, as replicas of one deployment do."""

    def __init__(self, *, database_url: str, broker_url: str, log_dir: Path, devices: int,
                 workers: int = 2, threads: int = 8, sim_args: list[str] | None = None,
                 extra_env: dict[str, str] | None = None, controllers: int = 1) -> None:
        self.env = {
            **os.environ,
            "CERTFLEET_SECRET_KEY": TEST_SECRET_KEY,
            "CERTFLEET_DATABASE_URL": database_url,
            "CERTFLEET_BROKER_URL": broker_url,
            "CERTFLEET_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        self.log_dir, self.devices, self.workers, self.threads = log_dir, devices, workers, threads
        self.controllers = controllers
        # The ports are chosen here, so their URLs are known before the stack starts.
        self.sim_url = f"http://127.0.0.1:{free_port()}"
        #: Each controller's API, in the order of :meth:`controller_procs`; ``api_url`` is the first.
        self.api_urls = [f"http://127.0.0.1:{free_port()}" for _ in range(controllers)]
        self.api_url = self.api_urls[0]
        #: Each worker process's Prometheus endpoint, in the order of :meth:`worker_procs`.
        self.worker_metrics_urls = [f"http://127.0.0.1:{free_port()}" for _ in range(workers)]
        self.sim_args = sim_args or []
        self.procs: list[Proc] = []

    def start(self) -> Stack:
        """Start every process and wait until each is ready. Should one fail, those already
        started are stopped and the failure raised: a stack half up leaves nothing running."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # The token first: on an empty database it creates the schema, before the services
        # start side by side.
        self.token = admin_token(self.env)
        sim = self._launch("device-sim", ["device-sim", "--devices", str(self.devices), "--port", _port(self.sim_url),
                                          "--seed", "7", *self.sim_args])
        checks = [(sim, lambda: re.search(r"device-sim ready", sim.output()) is not None)]
        for i, url in enumerate(self.api_urls):
            controller = self._launch("controller" if i == 0 else f"controller-{i}",
                                      ["controller", "--host", "127.0.0.1", "--port", _port(url)])
            checks.append((controller, lambda url=url: answers_200(url + "/healthz")))
        for i, url in enumerate(self.worker_metrics_urls):
            # Its metrics server answers once the dramatiq command has loaded the worker module.
            worker = self._launch(f"worker-{i}", ["worker", "--processes", "1", "--threads", str(self.threads)],
                                  CERTFLEET_WORKER_METRICS_PORT=_port(url))
            checks.append((worker, lambda url=url + "/": answers_200(url)))
        wait_ready(checks)

    def _launch(self, name: str, args: list[str], **env: str) -> Proc:
        proc = Proc(name, args, {**self.env, **env}, self.log_dir)
        self.procs.append(proc)
        return proc

    def worker_procs(self) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith("worker")]

    def controller_procs(self) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith("controller")]

    def stop(self) -> None:
        """Stop every process, also when one fails to stop: all are asked at once (workers first,
        the simulator last), so their shutdowns overlap, then each is waited for."""
        failures = []
        for proc in reversed(self.procs):
            if not proc.stopped and not proc.terminated:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception as exc:  # the others must stop all the same
                failures.append(exc)
        if failures:
            raise failures[0]

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
