"""Certificates made in the test and an HTTPS server on loopback that serves with them, for
tests of how a device trusts and talks to a CA's TLS server. P-256 keys throughout: fast."""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()


def _issue(subject: str, public_key, issuer: Issued | None, signer: ec.EllipticCurvePrivateKey,
           extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=30))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())


def make_ca(common_name: str, *, issuer: Issued | None = None) -> Issued:
    """A root CA, or an intermediate one when ``issuer`` is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                             encipher_only=False, decipher_only=False)
    extensions = [(x509.BasicConstraints(ca=True, path_length=None), True), (ca_usage, True),
                  (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)]
    signer = issuer.key if issuer is not None else key
    return Issued(_issue(common_name, key.public_key(), issuer, signer, extensions), key)


def make_leaf(issuer: Issued, *, hosts: Sequence[str] = ("127.0.0.1", "localhost"), client: bool = False) -> Issued:
    """A TLS server certificate for ``hosts`` (names or IP addresses), or a client one."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([usage]), False),
    ]
    if names:
        extensions.append((x509.SubjectAlternativeName(names), False))
    subject = hosts[0] if hosts else "device"
    return Issued(_issue(subject, key.public_key(), issuer, issuer.key, extensions), key)


def pem(*items: Issued) -> str:
    return "".join(item.pem for item in items)


class TlsHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler that finishes the TLS handshake in its own thread, counting the
    handshakes that succeed in ``server.handshakes``."""

    protocol_version = "HTTP/1.1"

    def handle(self) -> None:
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            return  # the client refused the server's certificate, or the other way round
        self.server.handshakes += 1
        super().handle()

    def log_message(self, *args) -> None:
        pass


def ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1 (a container may have no IPv6)."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


class _Ipv6HttpServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextmanager
def https_server(handler: type[TlsHandler], *, leaf: Issued, chain: Sequence[Issued] = (),
                 client_cas: Sequence[Issued] = (), host: str = "127.0.0.1") -> Iterator[ThreadingHTTPServer]:
    """``handler`` served over HTTPS on ``host`` (an IPv4 or IPv6 address) with ``leaf`` and its
    ``chain``; asking for a client certificate (optional) that chains to ``client_cas`` when
    given. The server's port is ``server.server_address[1]``; ``server.server_names`` lists the
    name each client sent in SNI (None: it sent none); a failed handshake leaves the server serving."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="tls-server-") as folder:
        path = Path(folder) / "server.pem"
        path.write_text(leaf.key_pem + pem(leaf, *chain))
        context.load_cert_chain(str(path))
    if client_cas:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cadata=pem(*client_cas))
    server_class = _Ipv6HttpServer if ":" in host else ThreadingHTTPServer
    server = server_class((host, 0), handler)
    server.daemon_threads = True
    server.server_names = []
    context.sni_callback = lambda _conn, name, _context: server.server_names.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.handshakes = 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def one_connection_server(answer: Callable[[socket.socket], None]) -> Iterator[int]:
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
