"""A device's kept-alive connection to its CA, against real HTTP servers on loopback: a CA that
quietly closed the kept-alive connection is asked again on a new one, an answer too large to
be a certificate chain is refused, a CA that hangs up on a fresh connection is a lost
connection, not asked twice, and a CA's Retry-After counts from when its answer arrived."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.device_sim.ca_client.connection import (
    DEFAULT_RETRY_AFTER,
    MAX_ANSWER_BYTES,
    RETRY_AFTER_RANGE,
    CaConnection,
)
from services.device_sim.ca_client.network import CaFailure, network_failure


class QuietlyClosing(BaseHTTPRequestHandler):
    """Answers once per connection, then closes it without saying so (no Connection: close)."""

    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def do_GET(self) -> None:
        body = b"CA certificates"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


class Oversized(QuietlyClosing):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(MAX_ANSWER_BYTES + 10))
        self.end_headers()
        self.wfile.write(b"x" * (MAX_ANSWER_BYTES + 10))


class Holding(QuietlyClosing):
    """Answers with ``status`` and the Retry-After ``header`` (none when None)."""

    status, header = 202, None

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        if type(self).header is not None:
            self.send_header("Retry-After", type(self).header)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def connection(port: int, **kw) -> CaConnection:
    url = f"http://127.0.0.1:{port}/"

    def failure(exc: BaseException) -> CaFailure:
        return network_failure(exc, url=url, host="127.0.0.1", port=port, timeout=5, service="SCEP")

    return CaConnection(lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=5), url=url, failure=failure,
                        **kw)


def test_a_kept_alive_connection_the_ca_closed_is_opened_again():
    QuietlyClosing.connections = 0
    with http_server(QuietlyClosing) as port:
        ca = connection(port)
        first = ca.request("GET", "/", operation="GetCACert")
        second = ca.request("GET", "/", operation="GetCACert")
        ca.close()
    assert (first.status, first.body) == (200, b"CA certificates")
    assert (second.status, second.body) == (200, b"CA certificates")
    assert QuietlyClosing.connections == 2


def test_an_answer_larger_than_any_certificate_chain_is_refused():
    with http_server(Oversized) as port:
        ca = connection(port)
        with pytest.raises(CaFailure) as refused:
            ca.request("GET", "/", operation="GetCACert")
    assert refused.value.code == "ca_bad_response"
    assert f"answered GetCACert with more than {MAX_ANSWER_BYTES // 1024} KiB" in refused.value.message


def test_a_ca_hanging_up_on_a_new_connection_is_a_lost_connection_asked_once():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(1)  # long enough for a second connection, had the client opened one
    port = listener.getsockname()[1]
    accepted = []

    def hang_up() -> None:
        for _ in range(2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.recv(4096)
            conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    ca = connection(port)
    with pytest.raises(CaFailure) as lost:
        ca.request("GET", "/", operation="GetCACaps")
    thread.join(5)
    listener.close()
    assert lost.value.code == "ca_connection_lost" and lost.value.retryable
    assert len(accepted) == 1


ARRIVED = datetime(2030, 1, 2, 12, 0, tzinfo=UTC)
LOW, HIGH = RETRY_AFTER_RANGE


@pytest.mark.parametrize(("status", "header", "wait", "asked"), [
    (202, "30", 30, None),
    (202, "Wed, 02 Jan 2030 12:02:00 GMT", 120, None),
    (202, "Wed, 02 Jan 2030 11:00:00 GMT", LOW, None),  # already past: the device still waits a little
    (202, "86400", HIGH, None),
    (202, None, DEFAULT_RETRY_AFTER, None),
    (202, "soon", DEFAULT_RETRY_AFTER, None),
    (503, "Wed, 02 Jan 2030 12:00:45 GMT", 45, 45),
    (429, "5", 5, 5),
    (503, "soon", DEFAULT_RETRY_AFTER, None),
    (503, None, DEFAULT_RETRY_AFTER, None),
])
def test_a_ca_s_retry_after_counts_from_when_its_answer_arrived(status, header, wait, asked):
    Holding.status, Holding.header = status, header
    with http_server(Holding) as port:
        ca = connection(port, clock=lambda: ARRIVED)
        answer = ca.request("GET", "/", operation="simpleenroll")
        ca.close()
    assert answer.received_at == ARRIVED
    assert answer.retry_after() == wait
    assert answer.asked_to_wait() == asked
