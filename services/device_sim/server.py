"""Running the simulator: in a background thread (tests, the embedded stack) or blocking
(the ``certfleet device-sim`` command, in one process or, with ``--processes N``, in several:
see :mod:`.processes`). uvicorn serves it; with httptools installed its "auto" HTTP
implementation is httptools (h11 costs the simulator about 1.7 times the CPU per request);
access logging and the proxy-headers middleware are off.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from services.device_sim.app import DeviceSim, create_app
from services.device_sim.config import SimConfig
from services.device_sim.fleet import Fleet
from services.device_sim.partition import Partition
from shared.clock import utcnow
from shared.heap import settle_heap
from shared.http_thread import ServerThread


@dataclass
class RunningSim:
    """A simulator serving on ``url`` until :meth:`stop`."""

    sim: DeviceSim
    server: ServerThread

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def fleet(self) -> Fleet:
        return self.sim.fleet

    @property
    def config(self) -> SimConfig:
        return self.sim.config

    def stop(self) -> None:
        self.sim.release_hung_requests()
        self.server.stop()

    def __enter__(self) -> RunningSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(config: SimConfig, *, clock: Callable[[], datetime] = utcnow,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                    partition: Partition = Partition(), sock: socket.socket | None = None) -> RunningSim:
    """Build the fleet, bind config.port (0: a free one) and return once connections are accepted.
    ``clock`` and ``sleep`` (on the server's event loop) time the simulator. One process of several
    serves its ``partition`` of the fleet on ``sock``, bound for it beforehand."""
    sim = DeviceSim(config, clock=clock, sleep=sleep, partition=partition)
    # No proxy stands before a simulated device: its client's address is the one it sees.
    server = ServerThread(create_app(sim), host=config.host, port=config.port, sock=sock, proxy_headers=False)
    if partition.shared:
        sim.base_url = partition.urls[partition.position]
    else:
        sim.base_url = (config.public_url or server.url).rstrip("/")
    server.start()
    return RunningSim(sim=sim, server=server)


def run(config: SimConfig, *, announce: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM; announce the ready line once listening."""
    if config.processes > 1:
        from services.device_sim.processes import run_processes

        run_processes(config, announce=announce or _print)
        return
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    running = start_in_thread(config)
    settle_heap()  # the fleet, built once, is most of what the simulator holds
    try:
        (announce or _print)(f"device-sim ready: {running.url} devices={len(running.fleet)}")
        # Poll: the signal may land on another thread, which does not wake a blocked wait().
        while not stopping.wait(0.1):
            pass
    finally:
        running.stop()


def _print(line: str) -> None:
    print(line, flush=True)
