"""The device's HTTPS client on the event loop, against real TLS servers on loopback that answer
as scripted: an answer in chunks or one that ends where the connection does is read whole, a
kept-alive connection the CA closed is opened anew once (not again and again), an answer too
large for a certificate chain is refused, a server that never answers the handshake is given
up on after the timeout, and an IPv6 literal is reached as it is."""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from services.device_sim.ca_client.connection import MAX_ANSWER_BYTES
from services.device_sim.ca_client.https import CaHttpsConnection
from services.device_sim.ca_client.network import CaFailure, network_failure
from services.device_sim.ca_client.tls import TlsConnection
from services.device_sim.ca_client.trust import client_context
from tests.support.tls import ipv6_loopback, make_ca, make_leaf

pytestmark = pytest.mark.anyio

ROOT = make_ca("HTTPS Client Test Root")
LEAF = make_leaf(ROOT, hosts=["127.0.0.1", "::1"])
needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")

#: What a server does with each connection: given the TLS socket and the connection's number.
Script = Callable[[ssl.SSLSocket, int], None]


@contextmanager
def tls_server(script: Script, *, host: str = "127.0.0.1") -> Iterator[list[int]]:
    """A TLS server on ``host`` running ``script`` on every connection, one thread each; yields
    a list that holds its port, then one entry per connection accepted."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "server.pem"
        path.write_text(LEAF.key_pem + LEAF.pem)
        context.load_cert_chain(str(path))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, 0), family=family)
    seen = [listener.getsockname()[1]]

    def serve(conn: socket.socket, number: int) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                script(tls, number)
        except (ssl.SSLError, OSError):
            pass

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            seen.append(len(seen))
            threading.Thread(target=serve, args=(conn, len(seen) - 1), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        listener.close()
        thread.join(5)


def read_request(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def connection(host: str, port: int, *, timeout: float = 5) -> CaHttpsConnection:
    shown = f"[{host}]" if ":" in host else host
    url = f"https://{shown}:{port}/"

    def failure(exc: BaseException) -> CaFailure:
        return network_failure(exc, url=url, host=host, port=port, timeout=timeout, service="EST")

    return CaHttpsConnection(host, port, context=client_context(verify=True, anchors_pem=ROOT.pem),
                             timeout=timeout, url=url, failure=failure)


CHAIN = b"MIIGAQYJKoZIhvcNAQcCoIIF8jCCBe4CAQExADALBgkqhkiG9w0BBwGgggXU" * 50


def answer_in_chunks(tls: ssl.SSLSocket, _number: int) -> None:
    while read_request(tls):
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/pkcs7-mime\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(CHAIN), 1000):
            piece = CHAIN[start:start + 1000]
            tls.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        tls.sendall(b"0\r\n\r\n")


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
async def test_an_answer_in_chunks_is_read_whole_and_the_connection_kept(host):
    with tls_server(answer_in_chunks, host=host) as seen:
        ca = connection(host, seen[0])
        try:
            answers = [await ca.request("GET", "/.well-known/est/cacerts", operation="cacerts") for _ in range(2)]
        finally:
            ca.close()
    assert [(a.status, a.reason, a.body) for a in answers] == [(200, "OK", CHAIN)] * 2
    assert answers[0].headers["content-type"] == "application/pkcs7-mime"
    assert len(seen) - 1 == 1, "both requests went over one connection"


def answer_until_close(tls: ssl.SSLSocket, _number: int) -> None:
    read_request(tls)
    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/pkcs7-mime\r\n\r\n" + CHAIN)
    tls.unwrap()  # close_notify: the answer ends here


def answer_until_ragged_close(tls: ssl.SSLSocket, _number: int) -> None:
    read_request(tls)
    tls.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + CHAIN)  # then the TCP connection closes, no close_notify


@pytest.mark.parametrize("script", [answer_until_close, answer_until_ragged_close])
async def test_an_answer_without_a_length_is_read_until_the_ca_closes(script):
    with tls_server(script) as seen:
        ca = connection("127.0.0.1", seen[0])
        try:
            first = await ca.request("GET", "/.well-known/est/cacerts", operation="cacerts")
            second = await ca.request("GET", "/.well-known/est/cacerts", operation="cacerts")
        finally:
            ca.close()
    assert (first.status, first.body) == (200, CHAIN) and (second.status, second.body) == (200, CHAIN)
    assert len(seen) - 1 == 2, "a connection the answer ended with is not used again"


def answer_once_then_hang_up(tls: ssl.SSLSocket, number: int) -> None:
    """Answers the first connection's first request and closes it without saying so; hangs up
    on every later connection without answering."""
    read_request(tls)
    if number == 1:
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nMII")


async def test_a_kept_alive_connection_the_ca_closed_is_opened_anew_once():
    with tls_server(answer_once_then_hang_up) as seen:
        ca = connection("127.0.0.1", seen[0])
        try:
            assert (await ca.request("GET", "/.well-known/est/cacerts", operation="cacerts")).body == b"MII"
            with pytest.raises(CaFailure) as lost:
                await ca.request("POST", "/.well-known/est/simpleenroll", operation="simpleenroll", body=b"CSR")
        finally:
            ca.close()
    assert lost.value.code == "ca_connection_lost" and lost.value.retryable, lost.value.message
    assert lost.value.message == (f"CA at https://127.0.0.1:{seen[0]}/ dropped the connection: "
                                  "Remote end closed connection without response")
    assert len(seen) - 1 == 2, "the closed connection was replaced once, then the device gave up"


def answer_too_much(tls: ssl.SSLSocket, _number: int) -> None:
    read_request(tls)
    size = MAX_ANSWER_BYTES + 10
    tls.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
    tls.sendall(b"x" * size)


async def test_an_answer_larger_than_any_certificate_chain_is_refused():
    with tls_server(answer_too_much) as seen:
        ca = connection("127.0.0.1", seen[0])
        try:
            with pytest.raises(CaFailure) as refused:
                await ca.request("GET", "/.well-known/est/cacerts", operation="cacerts")
        finally:
            ca.close()
    assert refused.value.code == "ca_bad_response"
    assert refused.value.message == (f"CA at https://127.0.0.1:{seen[0]}/ answered cacerts with more than "
                                     f"{MAX_ANSWER_BYTES // 1024} KiB")


async def test_a_server_that_never_answers_the_handshake_is_given_up_on_after_the_timeout():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never speaks TLS
    try:
        with pytest.raises(TimeoutError, match="^The handshake operation timed out$"):
            await TlsConnection.open("127.0.0.1", listener.getsockname()[1], client_context(verify=False),
                                     timeout=0.2)
    finally:
        listener.close()
