"""HTTP/1.1 to devices' management APIs: kept-alive connections, one request at a time each, the
answer parsed by ``httptools`` (llhttp, the C parser uvicorn serves with).

A worker sends one to three requests per job; a general-purpose client (urllib3) spent about
0.3 ms of CPU on each, twice this module's cost, for features a device API does not need
(redirects, retries, proxies, decompression). What it needs is here: connection reuse, timeouts
on connecting and on every read, TLS with the system's trust store, chunked or length-framed or
read-until-close answers, and failures sorted into the three kinds :mod:`shared.device_client`
turns into job errors: unreachable, no answer in time, an unusable URL.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import ssl
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

import httptools

#: Most bytes of an answer read from a device; its largest (an exported PKCS#12 file in JSON)
#: is a few KiB, and a device sending more must not fill the worker's memory.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: Idle connections kept per device endpoint.
DEFAULT_IDLE_PER_ENDPOINT = 64
#: Most bytes of an answer's status line and headers: a device streaming headers without end
#: is cut off like one sending too large a body.
MAX_HEAD_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024


class Unreachable(Exception):
    """The request got no complete answer: refused, reset, a name that does not resolve, TLS."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoAnswer(Exception):
    """Connecting or an answer took longer than the timeout."""


class BadUrl(Exception):
    """The management URL cannot be requested; ``problem`` says why."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class AnswerTooLarge(Exception):
    """The answer's body is over :data:`MAX_ANSWER_BYTES`, or its head over :data:`MAX_HEAD_BYTES`;
    ``what`` says which, for a message."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    #: Names lower-case; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Endpoint:
    """Where a management URL's requests go: scheme, host and port, and the path they start with."""

    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def origin(self) -> tuple[str, str, int]:
        """What connections are kept by: every device behind one host and port shares them."""
        return self.scheme, self.host, self.port

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@lru_cache(maxsize=4096)
def endpoint_of(base_url: str) -> Endpoint:
    """The endpoint of a management URL; BadUrl when it is not an http(s) URL with a host."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError as exc:
        raise BadUrl(str(exc) or "it does not parse") from None
    if parts.scheme not in ("http", "https"):
        raise BadUrl(f"scheme {(parts.scheme or base_url)!r} is not http or https")
    if not parts.hostname:
        raise BadUrl("it names no host")
    default = 443 if parts.scheme == "https" else 80
    return Endpoint(scheme=parts.scheme, host=parts.hostname, port=port or default,
                    base_path=parts.path.rstrip("/"))


class _Parsed:
    """httptools' callbacks: what one answer said."""

    def __init__(self) -> None:
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.headers_done = self.complete = self.keep_alive = self.too_large = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_status(self, reason: bytes) -> None:
        self.reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Read now: llhttp's verdict is reset once the answer is complete.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_ANSWER_BYTES:
            self.too_large = True
            raise AnswerTooLarge("")  # httptools stops parsing, and raises its own error
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    @property
    def until_close(self) -> bool:
        """An answer framed by the end of the connection (no length, not chunked)."""
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "")


@dataclass
class _Connection:
    sock: socket.socket | ssl.SSLSocket
    endpoint: Endpoint
    used: bool = field(default=False)

    def dropped(self) -> bool:
        """Whether the device closed this idle connection (readable: its end, or bytes nobody asked for)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class DeviceHttp:
    """Kept-alive connections to device endpoints, shared by a process's threads."""

    def __init__(self, *, timeout_seconds: float, tls: ssl.SSLContext,
                 idle_per_endpoint: int = DEFAULT_IDLE_PER_ENDPOINT) -> None:
        self.timeout, self.tls, self.idle_per_endpoint = timeout_seconds, tls, idle_per_endpoint
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its request ends."""
        with self._lock:
            idle, self._idle, self._closed = self._idle, {}, True
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def request(self, method: str, base_url: str, path: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        """One request to ``base_url`` + ``path``; the whole answer, whatever its status."""
        endpoint = endpoint_of(base_url)
        connection = self._take(endpoint)
        try:
            self._send(connection, method, endpoint.base_path + path, body, headers or {})
            answer, keep = self._receive(connection)
        except BaseException:
            connection.close()
            raise
        if keep:
            self._give_back(connection)
        else:
            connection.close()
        return answer

    # --- connections -------------------------------------------------------------------------

    def _take(self, endpoint: Endpoint) -> _Connection:
        while True:
            with self._lock:
                idle = self._idle.get(endpoint.origin)
                connection = idle.pop() if idle else None
            if connection is None:
                return self._open(endpoint)
            if not connection.dropped():
                return connection
            connection.close()

    def _give_back(self, connection: _Connection) -> None:
        connection.used = True
        with self._lock:
            idle = None if self._closed else self._idle.setdefault(connection.endpoint.origin, [])
            if idle is not None and len(idle) < self.idle_per_endpoint:
                idle.append(connection)
                return
        connection.close()

    def _open(self, endpoint: Endpoint) -> _Connection:
        try:
            sock = _connect(endpoint.host, endpoint.port, self.timeout)
        except TimeoutError:
            raise NoAnswer from None
        except socket.gaierror:
            raise Unreachable("host name does not resolve") from None
        except OSError as exc:
            raise Unreachable(_reason(exc)) from None
        if endpoint.scheme == "https":
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=endpoint.host)
            except TimeoutError:
                sock.close()
                raise NoAnswer from None
            except OSError as exc:
                sock.close()
                raise Unreachable(_reason(exc)) from None
        return _Connection(sock=sock, endpoint=endpoint)

    # --- one exchange ------------------------------------------------------------------------

    def _send(self, connection: _Connection, method: str, target: str, body: bytes | None,
              headers: dict[str, str]) -> None:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {connection.endpoint.host_header}",
                 "Accept: application/json"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            connection.sock.sendall(head + body if body else head)
        except TimeoutError:
            raise NoAnswer from None
        except OSError as exc:
            raise Unreachable(_reason(exc)) from None

    def _receive(self, connection: _Connection) -> tuple[Answer, bool]:
        parsed = _Parsed()
        parser = httptools.HttpResponseParser(parsed)
        parsed.parser = parser
        buffer = bytearray(_READ_CHUNK)
        view = memoryview(buffer)
        received = 0
        while not parsed.complete:
            try:
                count = connection.sock.recv_into(buffer)
            except TimeoutError:
                raise NoAnswer from None
            except OSError as exc:
                raise Unreachable(_reason(exc)) from None
            received += count
            if count == 0:
                if parsed.headers_done and parsed.until_close:
                    break  # the end of the connection ends this answer
                raise Unreachable("connection reset")
            try:
                parser.feed_data(view[:count])
            except httptools.HttpParserError as exc:
                if parsed.too_large:
                    raise AnswerTooLarge(f"a body of more than {_size(MAX_ANSWER_BYTES)}") from None
                raise Unreachable(f"the device's answer is not HTTP: {exc}") from None
            if not parsed.headers_done and received > MAX_HEAD_BYTES:
                raise AnswerTooLarge(f"a status line and headers of more than {_size(MAX_HEAD_BYTES)}")
        answer = Answer(status=parser.get_status_code(), reason=parsed.reason, headers=parsed.headers,
                        body=b"".join(parsed.chunks))
        return answer, parsed.complete and parsed.keep_alive


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A connected TCP socket; an IP literal is connected to as it is, without a name look-up."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return socket.create_connection((host, port), timeout=timeout)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _size(count: int) -> str:
    return f"{count // (1024 * 1024)} MiB" if count >= 1024 * 1024 else f"{count // 1024} KiB"


def _reason(exc: OSError) -> str:
    """What a person should read for a connection that failed."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "connection reset"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return str(exc) or type(exc).__name__
