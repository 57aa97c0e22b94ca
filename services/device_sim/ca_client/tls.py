"""TLS from a device to its CA's HTTPS server, over pyOpenSSL, on the event loop.

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
- a peer's end of the stream reads as the end, ragged or not, as the ``ssl`` module's default
  ``suppress_ragged_eofs`` has it.

The connection runs on the event loop, OpenSSL on memory buffers (``SSL.Connection(context,
None)``): a device's wait for its CA costs no thread, and reading costs no poll() per record.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
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

    pyOpenSSL keeps a callback's exception on the context, which devices share:
    this callback never raises, and a connection that is not a :class:`TlsConnection`'s is refused."""
    peer = connection.get_app_data()
    if not isinstance(peer, TlsConnection):
        return False
    try:
        if not ok:
            peer.refuse(code, verify_message(code))
            return False
        return peer.check_name(cert) if depth == 0 else True
    except Exception as exc:
        peer.refuse(code, f"cannot check the server's certificate: {exc}")
        return False


class TlsConnection(asyncio.Protocol):
    """A client TLS connection on the event loop: OpenSSL works on memory buffers (no socket of
    its own), fed with what the transport receives, its output written to the transport.

    Opened by :meth:`open` (connect and handshake); then :meth:`send` and :meth:`recv`.
    """

    def __init__(self, context: SSL.Context, *, host: str, timeout: float) -> None:
        self.host, self.timeout = host, timeout
        self._ip = _ip_literal(host)
        self._rejected: CertificateRejected | None = None
        self._name_checked = False
        self.connection = SSL.Connection(context, None)
        self.connection.set_app_data(self)
        if self._ip is None:
            self.connection.set_tlsext_host_name(host.encode("idna"))
        self.connection.set_connect_state()
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        #: Whom data, the end of the stream or room to write wakes up.
        self._waiter: asyncio.Future[bool] | None = None
        #: The peer ended the stream (or the transport closed); ``_lost`` is why, when an error.
        self._ended = False
        self._lost: BaseException | None = None
        self._paused = False

    @classmethod
    async def open(cls, host: str, port: int, context: SSL.Context, *, timeout: float) -> TlsConnection:
        """A connection to ``host`` (a DNS name or an IP address) after a completed handshake."""
        tls = cls(context, host=host, timeout=timeout)
        try:
            await tls._connect(port)
            await tls.handshake()
        except BaseException:
            tls.close()
            raise
        return tls

    async def _connect(self, port: int) -> None:
        """The transport to ``host``: an IP address as it is (both asyncio and uvloop read an
        address literal without getaddrinfo, which costs CPU at every connection), a DNS name's
        addresses from the loop's resolver, tried in turn as :func:`socket.create_connection`
        does (each failure keeps its errno); TimeoutError("timed out") after ``timeout``."""
        if self._ip is not None:
            addresses = [self.host]
        else:
            infos = await self._loop.getaddrinfo(self.host, port, type=socket.SOCK_STREAM)
            addresses = [address[0] for _, _, _, _, address in infos]
        error: OSError | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._loop.create_connection(lambda: self, address, port)
                return
            except TimeoutError:
                error = TimeoutError("timed out")
            except OSError as exc:
                error = exc
        assert error is not None  # getaddrinfo answers at least one address or raises
        raise error

    @property
    def closed(self) -> bool:
        """Whether the connection can carry no more request: closed by either side."""
        return self._ended or self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        self.connection.set_app_data(None)  # no reference cycle left behind
        if self._transport is not None:
            self._transport.close()

    # --- the handshake and the server's identity ------------------------------------------------

    async def handshake(self) -> None:
        try:
            await self._call("handshake", self.connection.do_handshake)
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

    # --- application data ------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = await self._call("write", self.connection.send, view)
            except SSL.Error as exc:
                raise _as_stdlib(exc) from None
            view = view[sent:]
        if self._paused:  # the transport holds much unsent: wait until the peer takes it
            await self._wait("write", self._loop.time() + self.timeout)

    async def recv(self) -> bytes:
        """The next bytes the server sent; b"" at the end of the stream, ragged or not (as the
        ``ssl`` module's ``suppress_ragged_eofs`` has it)."""
        try:
            return await self._call("read", self.connection.recv, READ_CHUNK)
        except SSL.ZeroReturnError:
            return b""
        except SSL.Error as exc:
            if self._ended and self._lost is None and _is_eof(exc):
                return b""  # the server closed the connection without telling TLS first
            raise _as_stdlib(exc) from None

    # --- waiting ---------------------------------------------------------------------------------

    async def _call(self, what: str, operation: Callable[..., T], *args: Any) -> T:
        """``operation`` tried again as the server's bytes arrive, for the timeout at most; what
        OpenSSL has to send goes to the transport after each try."""
        deadline: float | None = None
        while True:
            try:
                result = operation(*args)
            except SSL.WantReadError:
                self._flush()
                if self._ended:  # OpenSSL was told of the end (bio_shutdown); a lost transport says why
                    raise self._lost or SSL.SysCallError(-1, "Unexpected EOF") from None
                deadline = self._loop.time() + self.timeout if deadline is None else deadline
                await self._wait(what, deadline)
                continue
            except SSL.Error as exc:
                self._flush()  # an alert telling the server why
                if self._lost is not None and _is_eof(exc):
                    raise self._lost from None  # the connection was reset, say, not closed
                raise
            self._flush()
            return result

    async def _wait(self, what: str, deadline: float) -> None:
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_at(deadline, _time_up, waiter)
        try:
            if not await waiter:
                raise TimeoutError(f"The {what} operation timed out")
        finally:
            self._waiter = None
            timer.cancel()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    def _flush(self) -> None:
        while True:
            try:
                data = self.connection.bio_read(READ_CHUNK)
            except SSL.WantReadError:
                return
            if self._transport is not None and not self._transport.is_closing():
                self._transport.write(data)

    # --- the transport's side --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no subclass)

    def data_received(self, data: bytes) -> None:
        self.connection.bio_write(data)
        self._wake()

    def eof_received(self) -> bool:
        self._end(None)
        return False  # nothing more to say to a server that has closed: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        if not self._ended:
            self._ended, self._lost = True, exc
            self.connection.bio_shutdown()
        self._paused = False
        self._wake()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()


def _time_up(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


def _is_eof(exc: SSL.Error) -> bool:
    """Whether ``exc`` is OpenSSL's word for a stream that ended without a close_notify."""
    if isinstance(exc, SSL.SysCallError):
        return exc.args[0] == -1
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    return bool(errors) and len(errors[-1]) == 3 and "unexpected eof" in str(errors[-1][2])


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


@lru_cache(maxsize=256)
def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The host as an IP address, None for a name (every connection asks; a fleet has few CAs)."""
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
