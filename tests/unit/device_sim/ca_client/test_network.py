"""How a device names a CA it cannot talk to, from real sockets on loopback: a CA that goes
away in the middle of a TLS handshake (stopping, restarting) is worth trying again; a server
that does not speak TLS at all is not."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from services.device_sim.ca_client.network import CaFailure, network_failure


@contextmanager
def server(answer: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback TCP server that hands its one connection to ``answer``; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(5)


def handshake_failure(port: int) -> CaFailure:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
    except OSError as exc:  # ssl.SSLError is an OSError
        return network_failure(exc, url=f"https://127.0.0.1:{port}/", host="127.0.0.1", port=port,
                               timeout=5, service="EST")
    raise AssertionError("the handshake succeeded")


def read_hello_then_close(conn: socket.socket) -> None:
    conn.recv(4096)  # the ClientHello: the CA process stops before it answers


def answer_in_plain_http(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_a_ca_gone_mid_handshake_is_a_lost_connection_worth_retrying():
    with server(read_hello_then_close) as port:
        failure = handshake_failure(port)
    assert failure.code == "ca_connection_lost", failure.message
    assert failure.retryable
    assert f"CA at https://127.0.0.1:{port}/ closed the connection during the TLS handshake" in failure.message


def test_a_server_that_does_not_speak_tls_is_a_permanent_tls_failure():
    with server(answer_in_plain_http) as port:
        failure = handshake_failure(port)
    assert failure.code == "ca_tls_failed", failure.message
    assert not failure.retryable
    assert "TLS handshake failed" in failure.message
