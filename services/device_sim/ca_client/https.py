"""HTTP/1.1 from a device to its CA's HTTPS server, on the event loop: one kept-alive
:class:`.tls.TlsConnection` per enrollment, as :class:`.connection.CaConnection` keeps one for
SCEP: opened on the first request, reused for the enrollment's next ones, opened once more when
the CA had closed the kept-alive one meanwhile, and every answer read whole (up to
:data:`.connection.MAX_ANSWER_BYTES`).

Answers are read by httptools' parser (llhttp, in C): Content-Length, chunked, or until the CA
closes the connection; whether the connection stays open is the parser's reading of the answer.
What goes wrong comes out as :mod:`http.client` named it (``RemoteDisconnected``,
``IncompleteRead``, ``BadStatusLine``), so :mod:`.network` tells the causes apart as before.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httptools
from OpenSSL import SSL

from services.device_sim.ca_client.connection import MAX_ANSWER_BYTES, Answer, too_large
from services.device_sim.ca_client.network import CaFailure
from services.device_sim.ca_client.tls import TlsConnection
from shared.clock import utcnow

#: Most bytes of status line and headers the device reads before it gives up on an answer.
MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class Reply:
    """One answer as read off the connection; ``body`` holds more than the limit when it was too large."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class _AnswerParts:
    """httptools' callbacks: the parts of one answer as the parser finds them."""

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.reason = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.head_done = self.complete = False
        #: The parser's verdict, read with the headers: it forgets it once the answer is complete.
        self.keep_alive = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # Header names lower-case; a repeated header keeps its last value, as before.
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        self.body.append(data)
        self.size += len(data)

    def on_message_complete(self) -> None:
        self.complete = True


def request_bytes(method: str, target: str, *, host: str, headers: dict[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


async def exchange(tls: TlsConnection, request: bytes, *, limit: int) -> Reply:
    """Send ``request``; the answer, its body read up to ``limit`` bytes and a little more."""
    await tls.send(request)
    parts = _AnswerParts()
    try:
        return await _read_answer(tls, parts, limit)
    finally:
        parts.parser = None  # no cycle left for the garbage collector


async def _read_answer(tls: TlsConnection, parts: _AnswerParts, limit: int) -> Reply:
    parser = parts.parser
    assert parser is not None
    received = 0
    keep_alive = True
    while not parts.complete:
        data = await tls.recv()
        if not data:
            keep_alive = False
            if parts.head_done and "content-length" not in parts.headers \
                    and "chunked" not in parts.headers.get("transfer-encoding", "").lower():
                break  # an answer that ends where the connection does
            if not received:
                raise http.client.RemoteDisconnected("Remote end closed connection without response")
            raise http.client.IncompleteRead(b"".join(parts.body))
        received += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserError:
            if not parts.head_done:
                raise http.client.BadStatusLine(repr(data[:100])) from None
            raise http.client.IncompleteRead(b"".join(parts.body)) from None
        if parts.size > limit:
            keep_alive = False
            break
        if not parts.head_done and received > MAX_HEAD_BYTES:
            raise http.client.LineTooLong("the answer's status line and headers")
    keep_alive = keep_alive and parts.complete and parts.keep_alive
    return Reply(status=parser.get_status_code(), reason=parts.reason.decode("latin-1").strip(),
                 headers=parts.headers, body=b"".join(parts.body), keep_alive=keep_alive)


class CaHttpsConnection:
    """The connection to the CA at ``host``:``port``; ``failure`` names a network error (the
    protocol knows what the device was checking the server against), ``clock`` stamps each
    answer with the time it arrived."""

    def __init__(self, host: str, port: int, *, context: SSL.Context, timeout: float, url: str,
                 failure: Callable[[BaseException], CaFailure], clock: Callable[[], datetime] = utcnow) -> None:
        self.host, self.port, self.context, self.timeout = host, port, context, timeout
        self.url, self.failure, self.clock = url, failure, clock
        shown = f"[{host}]" if ":" in host else host
        self.host_header = shown if port == 443 else f"{shown}:{port}"
        self._tls: TlsConnection | None = None
        self._used = False

    def close(self) -> None:
        if self._tls is not None:
            self._tls.close()
        self._tls, self._used = None, False

    async def request(self, method: str, target: str, *, operation: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Answer:
        request = request_bytes(method, target, host=self.host_header, headers=headers or {}, body=body)
        for attempt in (1, 2):
            if self._tls is not None and self._tls.closed:
                self.close()  # the CA closed the kept-alive connection, and said so in time
            reused = self._used
            try:
                if self._tls is None:
                    self._tls = await TlsConnection.open(self.host, self.port, self.context, timeout=self.timeout)
                reply = await exchange(self._tls, request, limit=MAX_ANSWER_BYTES)
                self._used = True
                if not reply.keep_alive:
                    self.close()
                if len(reply.body) > MAX_ANSWER_BYTES:
                    raise too_large(self.url, operation)
                return Answer(status=reply.status, reason=reply.reason, headers=reply.headers, body=reply.body,
                              received_at=self.clock())
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server had closed the kept-alive connection: open a new one
                raise self.failure(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self.failure(exc) from None
        raise AssertionError("unreachable")
