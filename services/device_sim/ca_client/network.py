"""Why a device could not reach its CA: tells a socket or TLS error apart by its cause and
reports it as :mod:`shared.protocols.ca_failures` words it (stable code, message, whether
trying again later may help). Both device clients use it: EST over HTTPS and SCEP over plain
HTTP. :class:`CaFailure` is how every failure of an enrollment with a CA travels.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl

from shared.errors import CertfleetError
from shared.protocols.ca_failures import CaProblem, Cause, network_problem

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

    @classmethod
    def of(cls, problem: CaProblem, *, retry_after: float | None = None) -> CaFailure:
        return cls(problem.message, code=problem.code, retryable=problem.retryable, retry_after=retry_after)


def cause_of(exc: BaseException) -> tuple[Cause, str]:
    """The cause of ``exc``, and what the operating system or TLS library said about it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Cause.UNTRUSTED, str(exc.verify_message or exc.reason)
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError) or getattr(exc, "reason", None) in _CUT_OFF:
        # The connection ended mid-handshake: the CA stopping or restarting, not a TLS mismatch.
        return Cause.CUT_OFF_IN_HANDSHAKE, str(getattr(exc, "reason", None) or exc)
    if isinstance(exc, ssl.SSLError):
        return Cause.TLS_FAILED, str(exc.reason or exc)
    if isinstance(exc, socket.gaierror):
        temporary = exc.errno == socket.EAI_AGAIN
        return (Cause.NAME_UNRESOLVED_FOR_NOW if temporary else Cause.NAME_UNRESOLVED), str(exc.strerror)
    if isinstance(exc, ConnectionRefusedError):
        return Cause.REFUSED, str(exc.strerror or exc)
    if isinstance(exc, TimeoutError):
        return Cause.TIMEOUT, str(exc)
    if isinstance(exc, OSError) and exc.errno in _NO_ROUTE:
        return Cause.NO_ROUTE, str(exc.strerror)
    if isinstance(exc, ConnectionError | http.client.RemoteDisconnected):
        return Cause.DROPPED, str(exc)
    if isinstance(exc, http.client.HTTPException):
        return Cause.NOT_HTTP, type(exc).__name__
    return Cause.UNREACHABLE, getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def network_failure(exc: BaseException, *, url: str, host: str, port: int, timeout: float, service: str,
                    trust: str = "") -> CaFailure:
    """``exc`` from talking to the CA at ``url`` as a failure; ``service`` names the protocol
    ("EST", "SCEP") and ``trust`` what the server's TLS certificate was checked against."""
    cause, reason = cause_of(exc)
    return CaFailure.of(network_problem(cause, url=url, host=host, port=port, service=service, timeout=timeout,
                                        reason=reason, trust=trust))
