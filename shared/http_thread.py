"""Serve an ASGI app with uvicorn in a background thread, on a socket bound up front so
the caller knows the port before the first request (port 0 picks a free one), or on a socket
the caller bound (a process serving a socket its parent bound for it)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class ServerThread:
    def __init__(self, app, *, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None,
                 proxy_headers: bool = True) -> None:
        """Serve on ``sock`` when given (bound to ``host``), else on a socket bound here to ``host``:``port``.
        ``proxy_headers``: take the client's address and scheme from X-Forwarded-For and -Proto when
        a proxy on loopback sends them (uvicorn's default); off, every request skips that middleware."""
        self.sock = sock if sock is not None else bind(host, port)
        self.host = host
        self.port = self.sock.getsockname()[1]
        # Idle connections are kept longer than certfleet's API client keeps them (10 s), so that
        # client never sends a request on a connection the server is closing.
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=30,
                                proxy_headers=proxy_headers)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name=f"http-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 15.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"HTTP server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: a free port), not yet listening."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
