"""How a device names a CA it cannot talk to, from real sockets on loopback and the device's own
TLS and HTTP (:mod:`services.device_sim.ca_client.tls`, :mod:`services.device_sim.ca_client.https`):
a CA that goes away in the middle of a TLS handshake (stopping, restarting), resets the
connection or does not answer in time (in the handshake or after the request) is worth trying
again; a server that does not speak TLS at all, or refuses the device in the handshake, is not."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.device_sim.ca_client.https import CaHttpsConnection
from services.device_sim.ca_client.network import CaFailure, network_failure
from services.device_sim.ca_client.trust import client_context
from tests.support.tls import make_ca, make_leaf, one_connection_server


def handshake_failure(port: int, *, timeout: float = 5) -> CaFailure:
    """What the device reports when it asks the server at ``port`` for its CA certificates."""
    url = f"https://127.0.0.1:{port}/"

    def failure(exc: BaseException) -> CaFailure:
        return network_failure(exc, url=url, host="127.0.0.1", port=port, timeout=timeout, service="EST")

    async def ask() -> CaFailure:
        conn = CaHttpsConnection("127.0.0.1", port, context=client_context(verify=False), timeout=timeout, url=url,
                                 failure=failure)
        try:
            await conn.request("GET", "/.well-known/est/cacerts", operation="cacerts")
        except CaFailure as exc:
            return exc
        finally:
            conn.close()
        raise AssertionError("the request succeeded")

    return asyncio.run(ask())


def read_hello_then_close(conn: socket.socket) -> None:
    conn.recv(4096)  # the ClientHello: the CA process stops before it answers


def answer_in_plain_http(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_a_ca_gone_mid_handshake_is_a_lost_connection_worth_retrying():
    with one_connection_server(read_hello_then_close) as port:
        failure = handshake_failure(port)
    assert failure.code == "ca_connection_lost", failure.message
    assert failure.retryable
    assert f"CA at https://127.0.0.1:{port}/ closed the connection during the TLS handshake" in failure.message


def test_a_server_that_does_not_speak_tls_is_a_permanent_tls_failure():
    with one_connection_server(answer_in_plain_http) as port:
        failure = handshake_failure(port)
    assert failure.code == "ca_tls_failed", failure.message
    assert not failure.retryable
    reason = failure.message.rsplit("TLS handshake failed: ", 1)[1]
    # OpenSSL's reason as a mnemonic (WRONG_VERSION_NUMBER), as the ssl module gave it.
    assert reason and reason == reason.upper() and " " not in reason, failure.message


def test_a_ca_that_resets_the_connection_in_the_handshake_dropped_it_worth_retrying():
    def reset(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST

    with one_connection_server(reset) as port:
        failure = handshake_failure(port)
    assert failure.code == "ca_connection_lost" and failure.retryable, failure.message
    assert failure.message.startswith(f"CA at https://127.0.0.1:{port}/ dropped the connection: ")


def test_a_ca_that_never_finishes_the_handshake_is_a_timeout_worth_retrying():
    done = threading.Event()

    def hold(conn: socket.socket) -> None:
        conn.recv(4096)
        done.wait(10)  # answers nothing until the device has given up

    try:
        with one_connection_server(hold) as port:
            failure = handshake_failure(port, timeout=0.2)
            done.set()
    finally:
        done.set()
    assert failure.code == "ca_timeout" and failure.retryable, failure.message
    assert failure.message == f"CA at https://127.0.0.1:{port}/ unreachable: no answer within 0.2 s"


def test_a_ca_that_takes_the_request_and_never_answers_is_a_timeout_worth_retrying():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with server_with_certificate(context, make_leaf(make_ca("Silent CA Root"))) as port:
        failure = handshake_failure(port, timeout=0.2)  # the server reads the request, answers nothing
    assert failure.code == "ca_timeout" and failure.retryable, failure.message
    assert failure.message == f"CA at https://127.0.0.1:{port}/ unreachable: no answer within 0.2 s"


def test_a_ca_that_wants_a_client_certificate_the_device_lacks_is_a_tls_failure():
    root = make_ca("Client Certificate Root")
    leaf = make_leaf(root)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=root.pem)
    with server_with_certificate(context, leaf) as port:
        failure = handshake_failure(port)
    # TLS 1.3: the CA's alert reaches the device at its first read, after its side of the handshake.
    assert failure.code == "ca_tls_failed" and not failure.retryable, failure.message
    assert failure.message.endswith("TLS handshake failed: TLSV13_ALERT_CERTIFICATE_REQUIRED")


@contextmanager
def server_with_certificate(context: ssl.SSLContext, leaf) -> Iterator[int]:
    """A TLS server with ``leaf`` that completes (or fails) its side of one handshake, then
    reads what the device sends until it closes, answering nothing."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "server.pem"
        path.write_text(leaf.key_pem + leaf.pem)
        context.load_cert_chain(str(path))

    def handshake(conn: socket.socket) -> None:
        tls = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError):
            pass
        # Open until the device closes: closing with its request unread would reset the
        # connection, and the reset could overtake the alert on its way.
        with socket.socket(fileno=tls.detach()) as raw:
            while raw.recv(4096):
                pass

    with one_connection_server(handshake) as port:
        yield port
