"""The key-exchange groups a device offers its CA: the post-quantum hybrid X25519MLKEM768 first, with
a key share for X25519 alone, read off the ClientHello the device sends on a real loopback socket;
and what that means in real handshakes: a CA with the hybrid (the OpenSSL the device links) still
agrees on it, one without (the standard library's OpenSSL, as the CA simulator has) on X25519."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL, crypto

from services.device_sim.ca_client.trust import client_context
from tests.support.tls import make_ca, make_leaf, one_connection_server

X25519, X25519MLKEM768, P256 = 0x001D, 0x11EC, 0x0017
SUPPORTED_GROUPS, KEY_SHARE = 10, 51
_OPENSSL = Binding()
ROOT = make_ca("Groups Test Root")
LEAF = make_leaf(ROOT, hosts=["127.0.0.1"])


def handshake(port: int) -> SSL.Connection:
    """The device's side of a handshake with the server on ``port``, as its CA client starts one;
    the connection, whether or not the server finished the handshake."""
    sock = socket.create_connection(("127.0.0.1", port))
    # Blocking, as pyOpenSSL's own socket mode needs, but never for long: a read waits 5 s at most.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))
    tls = SSL.Connection(client_context(verify=False), sock)
    tls.set_connect_state()
    try:
        tls.do_handshake()
    except SSL.Error:
        pass  # the ClientHello reader hangs up: the offer is all it wanted
    return tls


def agreed_group(tls: SSL.Connection) -> str:
    return _OPENSSL.ffi.string(_OPENSSL.lib.SSL_get0_group_name(tls._ssl)).decode()  # noqa: SLF001


def read_client_hello(conn: socket.socket) -> bytes:
    """The handshake message of the first TLS record the client sent."""
    head = conn.recv(5, socket.MSG_WAITALL)
    (length,) = struct.unpack("!H", head[3:5])
    return conn.recv(length, socket.MSG_WAITALL)


def extensions(hello: bytes) -> dict[int, bytes]:
    assert hello[0] == 1, "a ClientHello"
    at = 4 + 2 + 32  # handshake header, legacy version, random
    at += 1 + hello[at]  # session id
    at += 2 + struct.unpack("!H", hello[at:at + 2])[0]  # cipher suites
    at += 1 + hello[at]  # compression methods
    end = at + 2 + struct.unpack("!H", hello[at:at + 2])[0]
    at += 2
    found = {}
    while at < end:
        kind, size = struct.unpack("!HH", hello[at:at + 4])
        found[kind] = hello[at + 4:at + 4 + size]
        at += 4 + size
    return found


def groups_offered(data: bytes) -> list[int]:
    return [struct.unpack("!H", data[i:i + 2])[0] for i in range(2, 2 + struct.unpack("!H", data[:2])[0], 2)]


def key_shares(data: bytes) -> list[int]:
    shares, at = [], 2
    while at < 2 + struct.unpack("!H", data[:2])[0]:
        group, size = struct.unpack("!HH", data[at:at + 4])
        shares.append(group)
        at += 4 + size
    return shares


def test_the_device_offers_the_hybrid_first_but_makes_a_key_share_for_x25519_alone():
    seen = {}

    def capture(conn: socket.socket) -> None:
        seen.update(extensions(read_client_hello(conn)))

    with one_connection_server(capture) as port:
        handshake(port)
    assert groups_offered(seen[SUPPORTED_GROUPS])[:3] == [X25519MLKEM768, X25519, P256]
    assert key_shares(seen[KEY_SHARE]) == [X25519]


def answer_once(context_wrap: Callable[[socket.socket], object]) -> Callable[[socket.socket], None]:
    """A server side that completes one handshake, sends a byte and closes."""
    def handle(conn: socket.socket) -> None:
        tls = context_wrap(conn)
        tls.sendall(b"x")  # type: ignore[attr-defined]

    return handle


def device_handshake(handle: Callable[[socket.socket], None]) -> str:
    """The group a complete handshake with ``handle``'s server agreed on, read on the device's side."""
    with one_connection_server(handle) as port:
        tls = handshake(port)
        try:
            assert tls.recv(1) == b"x", "the handshake completed"
            return agreed_group(tls)
        finally:
            tls.close()  # pyOpenSSL passes close to the socket


needs_group_names = pytest.mark.skipif(not getattr(_OPENSSL.lib, "Cryptography_HAS_SSL_GET0_GROUP_NAME", 0),
                                       reason="this OpenSSL cannot name the group agreed on")


def bundled_openssl_server(conn: socket.socket) -> SSL.Connection:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate(crypto.X509.from_cryptography(LEAF.cert))
    ctx.use_privatekey(crypto.PKey.from_cryptography_key(LEAF.key))
    tls = SSL.Connection(ctx, conn)
    tls.set_accept_state()
    tls.do_handshake()
    return tls


@needs_group_names
def test_a_ca_with_the_hybrid_still_agrees_on_it():
    assert device_handshake(answer_once(bundled_openssl_server)) == "X25519MLKEM768"


@needs_group_names
def test_a_ca_without_the_hybrid_agrees_on_x25519(tmp_path):
    """The standard library's OpenSSL here (3.0, as the CA simulator serves with) has no ML-KEM."""
    if ssl.OPENSSL_VERSION_INFO[:2] >= (3, 5):
        pytest.skip("the standard library's OpenSSL has the hybrid here")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (tmp_path / "server.pem").write_text(LEAF.key_pem + LEAF.pem)
    context.load_cert_chain(str(tmp_path / "server.pem"))
    assert device_handshake(answer_once(lambda conn: context.wrap_socket(conn, server_side=True))) == "x25519"
