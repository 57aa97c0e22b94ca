"""TLS from a device to its CA's HTTPS server, over pyOpenSSL.

Why not the standard library's ``ssl``: it is linked to the system's OpenSSL (3.0 here), whose
client handshake cost 1.27 ms of CPU per connection against the CA simulator; pyOpenSSL runs on
the OpenSSL the ``cryptography`` wheel bundles (4.0), where the same handshake cost 0.74 ms, and
every simulated enrollment makes one.

What the ``ssl`` module did for the device is done here the same way:

- the server's chain is verified by OpenSSL against the context's trust anchors (the context
  comes from :func:`.trust.client_context`, which sets :func:`check_server` as its verify
  callback); the server must then name the URL's host, a DNS name or an IP address, in its
  subjectAltName (``service-identity``, as RFC 6125 says; no common-name fallback). A name
  that does not match fails the handshake, as the ``ssl`` module's check did, so a renewing
  device shows its certificate to no such server;
- SNI carries DNS names, never IP literals;
- the connection's timeout bounds the handshake, each read and each write;
- failures come out as the ``ssl`` module's exceptions (:class:`ssl.SSLCertVerificationError`
  with OpenSSL's verify message, :class:`ssl.SSLEOFError`, :class:`ssl.SSLError` with
  OpenSSL's reason mnemonic), ``OSError`` by errno, and :class:`TimeoutError`, so
  :func:`.network.cause_of` names each cause as it did;
- :class:`TlsSocket` is socket enough for :mod:`http.client` (``sendall``, ``makefile``,
  ``close``), and a peer's end of the stream reads as the end, ragged or not, as the ``ssl``
  module's default ``suppress_ragged_eofs`` has it.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import os
import select
import socket
import ssl
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address

T = TypeVar("T")

#: X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the codes OpenSSL's own name
#: check gives, and the ``ssl`` module reported.
HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH = 62, 64
#: Most bytes one read asks OpenSSL for: a TLS record holds at most 16 KiB, and pyOpenSSL
#: allocates a buffer of the size asked for on every read.
READ_CHUNK = 64 * 1024
_OPENSSL = Binding()


class CertificateRejected(ssl.SSLCertVerificationError):
    """The server's certificate did not verify; ``verify_message`` says why, in OpenSSL's words."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
        self.library, self.reason = "SSL", "CERTIFICATE_VERIFY_FAILED"
        self.verify_code, self.verify_message = code, message


def verify_message(code: int) -> str:
    """OpenSSL's text for an X509_V_ERR code, as the ``ssl`` module's ``verify_message``.
    pyOpenSSL hands its verify callback the code only; the text comes from cryptography's OpenSSL
    binding (its public ``Binding``, which pyOpenSSL itself runs on), the code alone should a
    later cryptography drop that function."""
    error_string = getattr(_OPENSSL.lib, "X509_verify_cert_error_string", None)
    text = error_string(code) if error_string is not None else None
    return _OPENSSL.ffi.string(text).decode("utf-8", "replace") if text else f"certificate verify error {code}"


def check_server(connection: SSL.Connection, cert: crypto.X509, code: int, depth: int, ok: int) -> bool:
    """The verify callback of a verifying context: OpenSSL's verdict on each certificate of the
    chain, and the URL's host at the server's own certificate once the chain verified.

    pyOpenSSL keeps a callback's exception on the context, which devices share between threads:
    this callback never raises, and a connection that is not a :class:`TlsSocket`'s is refused."""
    peer = connection.get_app_data()
    if not isinstance(peer, TlsSocket):
        return False
    try:
        if not ok:
            peer.refuse(code, verify_message(code))
            return False
        return peer.check_name(cert) if depth == 0 else True
    except Exception as exc:
        peer.refuse(code, f"cannot check the server's certificate: {exc}")
        return False


class TlsSocket:
    """A client TLS connection over a connected socket, shaped as :mod:`http.client` uses a socket."""

    def __init__(self, sock: socket.socket, context: SSL.Context, *, host: str) -> None:
        self.sock, self.host, self.timeout = sock, host, sock.gettimeout()
        self._ip = _ip_literal(host)
        self._rejected: CertificateRejected | None = None
        self._name_checked = False
        self._readers, self._closed = 0, False
        self.connection = SSL.Connection(context, sock)
        self.connection.set_app_data(self)
        if self._ip is None:
            self.connection.set_tlsext_host_name(host.encode("idna"))
        self.connection.set_connect_state()

    @classmethod
    def connect(cls, sock: socket.socket, context: SSL.Context, *, host: str) -> TlsSocket:
        """``sock`` after a completed handshake with the server at ``host``; closed on failure."""
        try:
            tls = cls(sock, context, host=host)
            tls.handshake()
        except BaseException:
            sock.close()
            raise
        return tls

    # --- the handshake and the server's identity ------------------------------------------------

    def handshake(self) -> None:
        try:
            self._call("handshake", self.connection.do_handshake)
        except SSL.Error as exc:
            if self._rejected is not None:
                raise self._rejected from None
            raise _as_stdlib(exc) from None
        finally:
            self.connection.set_app_data(None)  # the verify callback is done: no reference cycle left

    def refuse(self, code: int, message: str) -> None:
        """Remember why the server was refused (the first reason: OpenSSL stops there)."""
        if self._rejected is None:
            self._rejected = CertificateRejected(code, message)

    def check_name(self, cert: crypto.X509) -> bool:
        """Whether the server's certificate names the host the device asked for."""
        if self._name_checked:
            return True
        refusal = _name_refusal(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert), self.host,
                                None if self._ip is None else str(self._ip))
        if refusal is not None:
            self.refuse(*refusal)
            return False
        self._name_checked = True
        return True

    # --- the socket http.client sees ---------------------------------------------------------------

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self._call("write", self.connection.send, view)
            except SSL.Error as exc:
                raise _as_stdlib(exc) from None
            view = view[sent:]

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Bytes read into ``buffer``; 0 at the end of the stream."""
        size = min(nbytes or len(buffer), READ_CHUNK)
        try:
            return self._call("read", self.connection.recv_into, buffer, size)
        except (SSL.ZeroReturnError, SSL.SysCallError) as exc:
            if isinstance(exc, SSL.ZeroReturnError) or exc.args[0] == -1:
                return 0  # the server closed the connection, with or without telling TLS first
            raise _as_stdlib(exc) from None
        except SSL.Error as exc:
            raise _as_stdlib(exc) from None

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode not in ("r", "rb"):
            raise ValueError(f"a TLS connection to the CA reads its answers only, not {mode!r}")
        self._readers += 1
        return io.BufferedReader(_Reader(self))

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        """Close the connection, once the answer being read (if any) is read: http.client closes
        the connection it hands to an answer that closes it."""
        self._closed = True
        if self._readers <= 0:
            self.sock.close()

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._closed and self._readers <= 0:
            self.sock.close()

    # --- waiting ---------------------------------------------------------------------------------

    def _call(self, what: str, operation: Callable[..., T], *args: Any) -> T:
        """``operation`` tried again as the socket becomes ready, for the timeout at most
        (the socket has a timeout, so it does not block: OpenSSL asks to wait instead)."""
        deadline: float | None = None
        while True:
            try:
                return operation(*args)
            except SSL.WantReadError:
                events = select.POLLIN
            except SSL.WantWriteError:
                events = select.POLLOUT
            wait: float | None = None
            if self.timeout is not None:
                now = time.monotonic()
                deadline = now + self.timeout if deadline is None else deadline
                wait = deadline - now
            poller = select.poll()
            poller.register(self.sock, events)
            if (wait is not None and wait <= 0) or not poller.poll(None if wait is None else wait * 1000):
                raise TimeoutError(f"The {what} operation timed out")


class _Reader(io.RawIOBase):
    """The answer stream :meth:`TlsSocket.makefile` buffers."""

    def __init__(self, tls: TlsSocket) -> None:
        self.tls: TlsSocket | None = tls

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.tls is None:
            raise ValueError("read of a closed answer stream")
        return self.tls.recv_into(buffer)

    def close(self) -> None:
        if self.tls is not None:
            tls, self.tls = self.tls, None
            tls.reader_closed()
        super().close()


class HttpsConnection(http.client.HTTPConnection):
    """:class:`http.client.HTTPSConnection` with TLS by :class:`TlsSocket`."""

    default_port = http.client.HTTPS_PORT

    def __init__(self, host: str, port: int, *, context: SSL.Context, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.context = context

    def connect(self) -> None:
        super().connect()
        self.sock = TlsSocket.connect(self.sock, self.context, host=self.host)


@lru_cache(maxsize=256)
def _name_refusal(der: bytes, host: str, ip: str | None) -> tuple[int, str] | None:
    """Why the certificate ``der`` does not name ``host`` (an IP address when ``ip`` is given),
    as OpenSSL's check said it; None when it does. A CA serves one certificate to every device:
    the simulated fleet checks each (certificate, host) once, not at every handshake (~40 µs)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        if ip is not None:
            verify_certificate_ip_address(cert, ip)
        else:
            verify_certificate_hostname(cert, host)
    except (VerificationError, CertificateError, ValueError):
        if ip is not None:
            return IP_ADDRESS_MISMATCH, f"IP address mismatch, certificate is not valid for {host!r}."
        return HOSTNAME_MISMATCH, f"Hostname mismatch, certificate is not valid for {host!r}."
    return None


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _as_stdlib(exc: SSL.Error) -> OSError:
    """A pyOpenSSL error as the ``ssl`` module raises the same failure."""
    if isinstance(exc, SSL.ZeroReturnError):
        return _ssl_error(ssl.SSLZeroReturnError, "ZERO_RETURN", "TLS/SSL connection has been closed (EOF)")
    if isinstance(exc, SSL.SysCallError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
        if code > 0:
            return OSError(code, os.strerror(code))  # ConnectionResetError and the like, by errno
        return _ssl_error(ssl.SSLEOFError, "UNEXPECTED_EOF_WHILE_READING", "EOF occurred in violation of protocol")
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    text = str(errors[-1][2]) if errors and len(errors[-1]) == 3 else ""
    # OpenSSL's reason text is its mnemonic in words ("wrong version number"); the ssl module
    # reported the mnemonic (WRONG_VERSION_NUMBER), as messages and logs still show it.
    reason = text.upper().replace(" ", "_") or "UNKNOWN"
    return _ssl_error(ssl.SSLError, reason, text or str(exc) or "TLS failure")


def _ssl_error(kind: type[ssl.SSLError], reason: str, text: str) -> ssl.SSLError:
    error = kind(1, f"[SSL: {reason}] {text}")
    error.library, error.reason = "SSL", reason
    return error
