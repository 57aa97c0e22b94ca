"""Why a device's enrollment with its CA failed, as the controller sees it: a stable code,
whether trying again later may help, and a message that names the cause and what to check.
The one table of these, for every protocol the device speaks to a CA (EST over HTTPS, SCEP
over HTTP). Pure: the caller says what happened; nothing here touches a socket.

    cause / answer              code                        retryable
    name not resolved           ca_name_unresolved          only for a temporary DNS failure
    no route to the host        ca_no_route                 yes
    connection refused          ca_connection_refused       yes
    no answer in time           ca_timeout                  yes
    cut off in the handshake    ca_connection_lost          yes (the CA stopping or restarting)
    connection dropped          ca_connection_lost          yes
    server not trusted          ca_tls_verification_failed  no
    other TLS failure           ca_tls_failed               no
    not an HTTP/1.1 answer      ca_bad_response             no
    any other network error     ca_unreachable              yes
    HTTP 401                    ca_auth_failed              no
    any other HTTP status       ca_http_error               for 5xx and 429
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Cause(StrEnum):
    """What went wrong between the device and the CA before the CA answered."""

    NAME_UNRESOLVED = "name_unresolved"
    #: The resolver said "try again" (EAI_AGAIN): the DNS server may answer later.
    NAME_UNRESOLVED_FOR_NOW = "name_unresolved_for_now"
    NO_ROUTE = "no_route"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    CUT_OFF_IN_HANDSHAKE = "cut_off_in_handshake"
    DROPPED = "dropped"
    UNTRUSTED = "untrusted"
    TLS_FAILED = "tls_failed"
    NOT_HTTP = "not_http"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class CaProblem:
    """What the device reports: the stable code, whether to try again, and the message."""

    code: str
    retryable: bool
    message: str


@dataclass(frozen=True)
class _Entry:
    code: str
    retryable: bool
    #: The message, with ``{url}``, ``{host}``, ``{port}``, ``{service}``, ``{timeout}``,
    #: ``{reason}`` and ``{trust}`` filled in from what the caller knows.
    text: str


_UNREACHABLE = "CA at {url} unreachable"
_NAME = (_UNREACHABLE + ": name {host} not resolved ({reason}); check the enrollment URL's host name and the "
         "device's DNS servers")

NETWORK: dict[Cause, _Entry] = {
    Cause.NAME_UNRESOLVED: _Entry("ca_name_unresolved", False, _NAME),
    Cause.NAME_UNRESOLVED_FOR_NOW: _Entry("ca_name_unresolved", True, _NAME),
    Cause.NO_ROUTE: _Entry("ca_no_route", True,
                           _UNREACHABLE + ": no route to host {host} ({reason}); check the device's routes to the CA"),
    Cause.REFUSED: _Entry("ca_connection_refused", True,
                          _UNREACHABLE + ": connection refused; is its {service} service listening on port {port}?"),
    Cause.TIMEOUT: _Entry("ca_timeout", True, _UNREACHABLE + ": no answer within {timeout:g} s"),
    Cause.CUT_OFF_IN_HANDSHAKE: _Entry("ca_connection_lost", True,
                                       "CA at {url} closed the connection during the TLS handshake ({reason})"),
    Cause.DROPPED: _Entry("ca_connection_lost", True, "CA at {url} dropped the connection: {reason}"),
    Cause.UNTRUSTED: _Entry("ca_tls_verification_failed", False,
                            "CA at {url}: TLS verification failed: {reason} (server checked against {trust})"),
    Cause.TLS_FAILED: _Entry("ca_tls_failed", False, "CA at {url}: TLS handshake failed: {reason}"),
    Cause.NOT_HTTP: _Entry("ca_bad_response", False, "CA at {url} sent an answer that is not HTTP/1.1: {reason}"),
    Cause.UNREACHABLE: _Entry("ca_unreachable", True, _UNREACHABLE + ": {reason}"),
}


def network_problem(cause: Cause, *, url: str, host: str, port: int, service: str, timeout: float,
                    reason: str, trust: str = "") -> CaProblem:
    """The problem for ``cause`` on the way to the CA at ``url``; ``service`` names the protocol
    ("EST", "SCEP"), ``reason`` is what the operating system or TLS library said, ``trust`` what
    the server's certificate was checked against."""
    facts: dict[str, Any] = {"url": url, "host": host, "port": port, "service": service, "timeout": timeout,
                             "reason": reason, "trust": trust or "the device trust anchors"}
    entry = NETWORK[cause]
    return CaProblem(entry.code, entry.retryable, entry.text.format(**facts))


def status_problem(status: int, *, url: str, operation: str, reason: str, detail: str, hint: str = ""
                   ) -> CaProblem:
    """The problem for a CA that answered ``operation`` with an HTTP ``status`` the protocol does
    not expect; ``reason`` is the status line's phrase, ``detail`` the CA's own explanation and
    ``hint`` what the operator can do (the protocol knows)."""
    said = f"{status} {reason}".strip()
    if status == 401:
        return CaProblem("ca_auth_failed", False,
                         f"CA at {url} refused {operation}: {said}; {hint or 'check the enrollment credentials'} "
                         f"(the CA says: {detail})")
    return CaProblem("ca_http_error", status >= 500 or status == 429,
                     f"CA at {url} answered {operation} with {said}: {detail}{f'; {hint}' if hint else ''}")
