"""``certfleet ca serve --processes N``: N server processes on one CA and one set of ports, so
that on a machine with more cores the CA is not what a load test measures.

The parent does everything once: it loads (or creates) the CA and its files, builds what is
served, binds the listening sockets, and forks N children that each serve EST, SCEP, the CA
bundle and the CRL/OCSP responder on every host. The parent serves nothing: it prints the
ready line once every child serves, forwards a stop to them, and stops them all, exit status 1
and a message naming it, when one of them ends on its own.

Each child has sockets of its own, bound by the parent with SO_REUSEPORT, rather than all
children sharing one socket per port: the kernel then spreads new connections evenly over the
children, whereas on a shared socket every child is woken for each connection and asyncio's
accept loop takes the whole backlog into whichever child wakes first, which under a burst of
connections is mostly one of them.

What the children share goes through the state directory: SQLite in WAL mode for what was
issued and revoked, held requests and SCEP transactions (decisions that read, then write, in one
write transaction), file locks for files made on demand and for building a CRL. A child is
told apart in its answers by the ``Certfleet-CA-Process`` header (1 to N) and in its log lines
by ``ca_process``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from services.ca_sim.service import CaApps, Listeners, new_event_loop, serve_on_loop, stop_serving
from shared.errors import CertfleetError
from shared.logging import get_logger

log = get_logger("ca.processes")

#: The answer header that names the server process (1 to N) that answered.
PROCESS_HEADER = "Certfleet-CA-Process"
#: Signals the parent acts on; blocked around each fork, so a child never runs its handlers.
WATCHED = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
#: Seconds the children have to start serving, and to stop before they are killed.
START_SECONDS = 60
STOP_SECONDS = 15
#: Seconds between a child's checks that its parent still lives (besides PR_SET_PDEATHSIG).
PARENT_CHECK_SECONDS = 1.0

#: This process's number among the server processes (0: not a forked server process).
_process = 0


async def _name_process(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers[PROCESS_HEADER] = str(_process)


@dataclass(frozen=True)
class _Child:
    index: int
    pid: int


def serve_processes(apps: CaApps, listeners: Listeners, processes: int, *,
                    on_ready: Callable[[], None]) -> None:
    """Serve ``apps`` from ``processes`` forked children until SIGTERM or SIGINT (then return)
    or until one child ends on its own (then the others are stopped and CertfleetError
    ``ca_process_exited`` raised). ``listeners``, bound with SO_REUSEPORT, go to the first child;
    the others get sets of their own on the same ports. ``on_ready`` is called once all serve."""
    if not listeners.reuse_port:
        raise ValueError("several server processes need listening sockets bound with SO_REUSEPORT")
    sets = [listeners]
    try:
        for _ in range(processes - 1):
            sets.append(listeners.again())
    except BaseException:
        for made in sets:
            made.close()
        raise
    for app in apps.applications():
        app.on_response_prepare.append(_name_process)
    if apps.ca.ledger is not None:
        apps.ca.ledger.close()  # no SQLite connection crosses a fork
    supervisor = _Supervisor(apps, sets)
    try:
        supervisor.start()
        supervisor.watch(on_ready)
    except _Stopped:
        pass
    finally:
        supervisor.close()


class _Supervisor:
    def __init__(self, apps: CaApps, sets: list[Listeners]) -> None:
        self.apps, self.sets = apps, sets
        self.children: dict[int, _Child] = {}
        self.ready_r, self.ready_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.previous: dict[int, object] = {}

    def start(self) -> None:
        parent = os.getpid()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        try:
            for index, own in enumerate(self.sets, start=1):
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _run_child(index, self.apps, own, self.sets, parent=parent, mask=mask, ready=self.ready_w,
                               inherited=(self.ready_r, self.wake_r, self.wake_w))
                self.children[pid] = _Child(index, pid)
            for own in self.sets:  # each child holds its own now: one that ends takes its sockets along
                own.close()
            os.close(self.ready_w)
            self.ready_w = -1
            signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
            for sig in WATCHED:  # the handlers do nothing: the wakeup byte is the message
                self.previous[sig] = signal.signal(sig, lambda *_: None)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def watch(self, on_ready: Callable[[], None]) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + START_SECONDS
        while True:
            waiting_ready = len(ready) < len(self.sets)
            timeout = max(0.0, deadline - time.monotonic()) if waiting_ready else None
            readable, _, _ = select.select([self.wake_r, self.ready_r] if waiting_ready else [self.wake_r], [], [],
                                           timeout)
            if not readable:
                self._fail(f"only {len(ready)} of {len(self.sets)} CA server processes served within "
                           f"{START_SECONDS} s")
            if self.wake_r in readable:
                signals = self._signals()
                if signal.SIGTERM in signals or signal.SIGINT in signals:
                    self._stop_children()
                    return
                if signal.SIGCHLD in signals:
                    self._reaped_unexpectedly(started=not waiting_ready)
            if waiting_ready and self.ready_r in readable:
                ready |= set(os.read(self.ready_r, 64))
                if len(ready) == len(self.sets):
                    on_ready()

    def _signals(self) -> set[int]:
        got: set[int] = set()
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.wake_r, 256):
                got |= set(data)
        return got

    def _reap(self) -> list[tuple[_Child, int]]:
        ended = []
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            child = self.children.pop(pid, None)
            if child is not None:
                ended.append((child, status))
        return ended

    def _reaped_unexpectedly(self, *, started: bool) -> None:
        ended = self._reap()
        if not ended:
            return
        child, status = ended[0]
        how = _how_it_ended(status)
        if not started:
            self._fail(f"CA server process {child.index} (pid {child.pid}) {how} before it served; see its log lines")
        self._fail(f"CA server process {child.index} (pid {child.pid}) {how} while serving; the others were "
                   "stopped")

    def _fail(self, message: str) -> None:
        if self._stop_children():  # a stop for us too, that came after the child's end: the stop it is
            raise _Stopped
        log.error("ca stopped", reason=message)
        raise CertfleetError(message, code="ca_process_exited")

    def _stop_children(self) -> bool:
        """SIGTERM to every child, SIGKILL to those still there after STOP_SECONDS; whether
        SIGTERM or SIGINT reached this process meanwhile."""
        asked = False
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while True:
            self._reap()
            signals = self._signals()
            asked |= signal.SIGTERM in signals or signal.SIGINT in signals
            left = deadline - time.monotonic()
            if not self.children or left <= 0:
                break
            select.select([self.wake_r], [], [], min(0.2, left))  # woken by SIGCHLD
        for child in self.children.values():
            log.warning("ca process killed", ca_process=child.index, pid=child.pid, after_seconds=STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)
        self.children.clear()
        return asked

    def close(self) -> None:
        if self.children:  # an error of our own: no child outlives the parent
            self._stop_children()
        for own in self.sets:
            own.close()
        signal.set_wakeup_fd(-1)
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        for fd in (self.ready_r, self.ready_w, self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)


class _Stopped(Exception):
    """A child's end and the stop signal crossed: the stop it was."""


def _how_it_ended(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


# --- in a child -----------------------------------------------------------------------------

def _run_child(index: int, apps: CaApps, own: Listeners, sets: list[Listeners], *, parent: int,
               mask: set[signal.Signals], ready: int, inherited: tuple[int, ...]) -> None:
    """Serve until SIGTERM or the parent's end; never returns (the parent's stack is not ours)."""
    global _process
    _process = index
    code = 1
    try:
        for sig in WATCHED:
            signal.signal(sig, signal.SIG_DFL)
        # Ctrl-C reaches the whole foreground process group: the parent stops the children.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _end_with_parent(parent)
        for fd in inherited:
            os.close(fd)
        for other in sets:
            if other is not own:
                other.close()
        structlog.contextvars.bind_contextvars(ca_process=index)
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        runners = loop.run_until_complete(serve_on_loop(apps, own))
        os.write(ready, bytes([index]))
        os.close(ready)
        loop.run_until_complete(_serve_until(stop, parent))
        loop.run_until_complete(stop_serving(runners))
        loop.close()
        code = 0
    except BaseException:
        log.exception("ca process failed", ca_process=index)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


async def _serve_until(stop: asyncio.Event, parent: int) -> None:
    """Until SIGTERM, or until the parent is gone (where PR_SET_PDEATHSIG is not there to say so)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            log.warning("ca process stopping: its parent is gone", ca_process=_process)
            return


def _end_with_parent(parent: int) -> None:
    """Linux: the kernel sends SIGTERM when the parent dies, even by SIGKILL. Should the parent
    have died already, before this was set, stop at once."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)
