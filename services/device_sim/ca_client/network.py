"""Why a device could not reach its CA: the one place that turns a socket or TLS error into a
:class:`CaFailure` with a stable code, a message naming the cause, and whether trying again
later may help. Both device clients use it: EST over HTTPS and SCEP over plain HTTP.

    name not resolved        ca_name_unresolved           (retryable for a temporary DNS failure)
    no route to the host     ca_no_route                  retryable
    connection refused       ca_connection_refused        retryable
    no answer in time        ca_timeout                   retryable
    connection dropped       ca_connection_lost           retryable (mid-handshake too)
    server not trusted       ca_tls_verification_failed
    other TLS failure        ca_tls_failed
    not HTTP/1.1             ca_bad_response
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl

from shared.errors import CertfleetError

_NO_ROUTE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
#: OpenSSL's reasons for a peer that went away in the middle of a handshake or record.
_CUT_OFF = {"UNEXPECTED_EOF_WHILE_READING", "EOF occurred in violation of protocol"}


class CaFailure(CertfleetError):
    """Enrolling with the CA did not work, for a reason named in the message."""

    def __init__(self, message: str, *, code: str, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        #: Seconds the CA asked the device to wait (a 503 or 429 with Retry-After), if it said.
        self.retryable, self.retry_after = retryable, retry_after


def network_failure(exc: BaseException, *, url: str, host: str, port: int, timeout: float, service: str,
                    trust: str = "") -> CaFailure:
    """``exc`` from talking to the CA at ``url`` as a failure; ``service`` names the protocol
    ("EST", "SCEP") and ``trust`` what the server's TLS certificate was checked against."""
    unreachable = f"CA at {url} unreachable"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CaFailure(
            f"CA at {url}: TLS verification failed: {exc.verify_message or exc.reason} "
            f"(server checked against {trust or 'the device trust anchors'})",
            code="ca_tls_verification_failed",
        )
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError) or getattr(exc, "reason", None) in _CUT_OFF:
        # The connection ended mid-handshake: the CA stopping or restarting, not a TLS mismatch.
        return CaFailure(f"CA at {url} closed the connection during the TLS handshake ({exc.reason or exc})",
                         code="ca_connection_lost", retryable=True)
    if isinstance(exc, ssl.SSLError):
        return CaFailure(f"CA at {url}: TLS handshake failed: {exc.reason or exc}", code="ca_tls_failed")
    if isinstance(exc, socket.gaierror):
        temporary = exc.errno == socket.EAI_AGAIN
        return CaFailure(
            f"{unreachable}: name {host} not resolved ({exc.strerror}); check the enrollment URL's host "
            "name and the device's DNS servers",
            code="ca_name_unresolved", retryable=temporary,
        )
    if isinstance(exc, ConnectionRefusedError):
        return CaFailure(f"{unreachable}: connection refused; is its {service} service listening on port "
                         f"{port}?", code="ca_connection_refused", retryable=True)
    if isinstance(exc, TimeoutError):
        return CaFailure(f"{unreachable}: no answer within {timeout:g} s", code="ca_timeout", retryable=True)
    if isinstance(exc, OSError) and exc.errno in _NO_ROUTE:
        return CaFailure(f"{unreachable}: no route to host {host} ({exc.strerror}); check the device's "
                         "routes to the CA", code="ca_no_route", retryable=True)
    if isinstance(exc, ConnectionError | http.client.RemoteDisconnected):
        return CaFailure(f"CA at {url} dropped the connection: {exc}", code="ca_connection_lost",
                         retryable=True)
    if isinstance(exc, http.client.HTTPException):
        return CaFailure(f"CA at {url} sent an answer that is not HTTP/1.1: {type(exc).__name__}",
                         code="ca_bad_response")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return CaFailure(f"{unreachable}: {reason}", code="ca_unreachable", retryable=True)
