"""``certfleet device-sim --processes N``: one simulated fleet served by N processes, so that a
machine with more cores measures certfleet rather than one simulator process.

The command's process binds every listening socket first (the first on ``--port``, the others on
free ports), so each process's URL, and with it every device's management URL, is known before
any of them serves. Then it forks the N serving processes; each builds only the devices its
partition owns (:mod:`.partition`) and serves them on its socket. Once all serve, the command
prints the ready line and watches them: SIGTERM or SIGINT stops them all, and a serving process
that exits on its own makes the command stop the others and fail. A serving process whose
parent is gone, even killed with SIGKILL, stops by itself.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from services.device_sim import credentials
from services.device_sim.config import SimConfig
from services.device_sim.partition import Partition
from services.device_sim.server import start_in_thread
from shared.errors import CertfleetError, ConfigurationError
from shared.heap import settle_heap
from shared.http_thread import bind
from shared.logging import get_logger

log = get_logger(__name__)

#: Forked, not spawned: the children inherit the bound sockets and start without importing again.
_FORK = multiprocessing.get_context("fork")
#: How long stopping processes get before they are killed.
STOP_SECONDS = 15.0
#: How often the command looks at its processes, and they at their parent.
POLL_SECONDS = 0.1
_PR_SET_PDEATHSIG = 1


@dataclass
class _Server:
    """One serving process, as the command watches it."""

    partition: Partition
    process: BaseProcess
    #: Where the process says it serves, or why it could not.
    news: Connection

    @property
    def name(self) -> str:
        return self.partition.describe(self.partition.position)


def run_processes(config: SimConfig, *, announce: Callable[[str], None]) -> None:
    """Serve the fleet from ``config.processes`` processes until SIGINT or SIGTERM; announce the
    ready line once every process serves. CertfleetError when one fails to start or exits."""
    # One fleet key for all: a device's credential must not depend on the process asked.
    config = replace(config, credential_key=config.credential_key or credentials.new_fleet_key())
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    servers: list[_Server] = []
    try:
        listening = _start(config, servers, stopping)
        if not _all_ready(servers, stopping):
            return
        announce(f"device-sim ready: {listening[0]} devices={config.devices} processes={config.processes} "
                 f"urls={','.join(listening)}")
        _watch(servers, stopping)
    finally:
        _stop(servers)


def _start(config: SimConfig, servers: list[_Server], stopping: threading.Event) -> list[str]:
    """Bind every socket, then fork a serving process per socket (appended to ``servers`` as they
    start); the listening URLs, in process order."""
    sockets = _bind_all(config)
    try:
        ports = [sock.getsockname()[1] for sock in sockets]
        listening = [_url(config.host, port) for port in ports]
        peer_urls = tuple(_url(_reachable(config.host), port) for port in ports)
        urls = config.public_urls or tuple(listening)
        for position in range(config.processes):
            partition = Partition(position=position, count=config.processes, urls=urls, peer_urls=peer_urls)
            news, told = _FORK.Pipe(duplex=False)
            process = _FORK.Process(target=_serve, name=f"device-sim-{position + 1}",
                                    args=(config, partition, sockets, told, stopping, os.getpid()))
            process.start()
            told.close()
            servers.append(_Server(partition=partition, process=process, news=news))
    finally:
        for sock in sockets:  # each process holds its own now
            sock.close()
    return listening


def _bind_all(config: SimConfig) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for position in range(config.processes):
            port = config.port if position == 0 else 0
            try:
                sockets.append(bind(config.host, port))
            except OSError as exc:
                raise CertfleetError(f"cannot listen on {config.host}:{port}: {exc.strerror or exc}",
                                     code="cannot_listen") from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _all_ready(servers: list[_Server], stopping: threading.Event) -> bool:
    """Wait until every process serves (True) or a stop is asked for (False); CertfleetError for a
    process that could not start, with its reason."""
    waiting = {server.news: server for server in servers}
    while waiting and not stopping.is_set():
        wait([*waiting, *(server.process.sentinel for server in waiting.values())], timeout=POLL_SECONDS)
        for news, server in list(waiting.items()):
            if news.poll():
                try:
                    message = news.recv()
                except EOFError:  # it exited without a word: _exited tells how
                    raise _exited(server) from None
                if message[0] != "ready":
                    _, code, text, configuration = message
                    raise (ConfigurationError if configuration else CertfleetError)(
                        f"{server.name}: {text}", code=code)
                del waiting[news]
            elif not server.process.is_alive():
                raise _exited(server)
    return not stopping.is_set()


def _watch(servers: list[_Server], stopping: threading.Event) -> None:
    """Until a stop is asked for; CertfleetError as soon as a process exits on its own."""
    while not stopping.is_set():
        wait([server.process.sentinel for server in servers], timeout=POLL_SECONDS)
        if stopping.is_set():  # they were told to stop as well
            return
        for server in servers:
            if server.process.exitcode is not None:
                raise _exited(server)


def _exited(server: _Server) -> CertfleetError:
    server.process.join(1)
    code = server.process.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 else \
        f"exited with status {code}"
    return CertfleetError(f"{server.name}, pid {server.process.pid}, {how}: the fleet is served by all "
                          "of its processes or not at all, so the others were stopped",
                          code="simulator_process_exited")


def _stop(servers: list[_Server]) -> None:
    """SIGTERM to every process still running, SIGKILL to any still running STOP_SECONDS later."""
    for server in servers:
        if server.process.is_alive():
            server.process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for server in servers:
        server.process.join(max(0.0, deadline - time.monotonic()))
    for server in servers:
        if server.process.is_alive():
            log.warning("simulator process did not stop; killing it", process=server.name)
            server.process.kill()
            server.process.join(5)
        server.news.close()


# --- in a serving process -----------------------------------------------------------------------

def _serve(config: SimConfig, partition: Partition, sockets: list[socket.socket], told: Connection,
           stopping: threading.Event, parent: int) -> None:
    """Serve ``partition`` on its socket until ``stopping`` (set by SIGTERM or SIGINT, whose
    handlers the fork kept) or until the parent is gone."""
    _stop_with_parent()
    own = sockets[partition.position]
    for sock in sockets:
        if sock is not own:
            sock.close()
    try:
        running = start_in_thread(config, partition=partition, sock=own)
    except CertfleetError as exc:
        _tell(told, ("failed", exc.code, exc.message, isinstance(exc, ConfigurationError)))
        sys.exit(1)
    except Exception as exc:
        log.exception("simulator process failed to start")
        _tell(told, ("failed", "simulator_process_failed", f"{type(exc).__name__}: {exc}", False))
        sys.exit(1)
    settle_heap()  # its share of the fleet is most of what the process holds
    try:
        if _tell(told, ("ready",)):
            # The parent's SIGKILL sends no signal here on systems without PR_SET_PDEATHSIG: look.
            while not stopping.wait(POLL_SECONDS) and os.getppid() == parent:
                pass
    finally:
        running.stop()


def _tell(told: Connection, message: tuple) -> bool:
    """Send the parent ``message``; False if it is gone (nothing to serve for, then)."""
    try:
        told.send(message)
        told.close()
        return True
    except OSError:
        return False


def _stop_with_parent() -> None:
    """Have Linux send this process SIGTERM when its parent dies (elsewhere, _serve's polling sees it)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _reachable(host: str) -> str:
    """Where the processes reach each other: the listening address, loopback for a wildcard one."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
