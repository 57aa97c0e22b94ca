"""The one table of CA failures: each cause and each unexpected HTTP status has its stable code,
says whether trying again may help, and a message naming the CA, the cause and what to check."""

from __future__ import annotations

import pytest

from shared.protocols.ca_failures import Cause, network_problem, status_problem

URL = "https://[2001:db8::5]:8443/"
FACTS = dict(url=URL, host="2001:db8::5", port=8443, service="EST", timeout=2.5)


@pytest.mark.parametrize(("cause", "reason", "code", "retryable", "says"), [
    (Cause.NAME_UNRESOLVED, "Name or service not known", "ca_name_unresolved", False,
     "name 2001:db8::5 not resolved (Name or service not known); check the enrollment URL's host name"),
    (Cause.NAME_UNRESOLVED_FOR_NOW, "Temporary failure in name resolution", "ca_name_unresolved", True,
     "not resolved (Temporary failure in name resolution)"),
    (Cause.NO_ROUTE, "No route to host", "ca_no_route", True, "no route to host 2001:db8::5 (No route to host)"),
    (Cause.REFUSED, "Connection refused", "ca_connection_refused", True,
     "connection refused; is its EST service listening on port 8443?"),
    (Cause.TIMEOUT, "timed out", "ca_timeout", True, "no answer within 2.5 s"),
    (Cause.CUT_OFF_IN_HANDSHAKE, "UNEXPECTED_EOF_WHILE_READING", "ca_connection_lost", True,
     "closed the connection during the TLS handshake (UNEXPECTED_EOF_WHILE_READING)"),
    (Cause.DROPPED, "Connection reset by peer", "ca_connection_lost", True,
     "dropped the connection: Connection reset by peer"),
    (Cause.UNTRUSTED, "unable to get local issuer certificate", "ca_tls_verification_failed", False,
     "TLS verification failed: unable to get local issuer certificate (server checked against the device "
     "trust anchors)"),
    (Cause.TLS_FAILED, "WRONG_VERSION_NUMBER", "ca_tls_failed", False, "TLS handshake failed: WRONG_VERSION_NUMBER"),
    (Cause.NOT_HTTP, "BadStatusLine", "ca_bad_response", False, "not HTTP/1.1: BadStatusLine"),
    (Cause.UNREACHABLE, "Network is down", "ca_unreachable", True, "unreachable: Network is down"),
])
def test_every_network_cause(cause, reason, code, retryable, says):
    problem = network_problem(cause, reason=reason, **FACTS)
    assert (problem.code, problem.retryable) == (code, retryable)
    assert problem.message.startswith(f"CA at {URL}")
    assert says in problem.message


def test_every_cause_is_in_the_table():
    for cause in Cause:
        assert network_problem(cause, reason="x", **FACTS).code.startswith("ca_")


def test_what_the_server_was_checked_against_is_named():
    problem = network_problem(Cause.UNTRUSTED, reason="self-signed certificate", trust="the pinned CA", **FACTS)
    assert "(server checked against the pinned CA)" in problem.message


@pytest.mark.parametrize(("status", "code", "retryable"), [
    (400, "ca_http_error", False),
    (401, "ca_auth_failed", False),
    (403, "ca_http_error", False),
    (404, "ca_http_error", False),
    (429, "ca_http_error", True),
    (500, "ca_http_error", True),
    (503, "ca_http_error", True),
])
def test_every_unexpected_status(status, code, retryable):
    problem = status_problem(status, url=URL, operation="simpleenroll", reason="Reason", detail="the CA's words")
    assert (problem.code, problem.retryable) == (code, retryable)
    assert f"{status} Reason" in problem.message and "the CA's words" in problem.message


def test_a_hint_tells_the_operator_what_to_do():
    refused = status_problem(401, url=URL, operation="simpleenroll", reason="Unauthorized", detail="bad password",
                             hint="check the username and password of the enrollment object")
    assert refused.message == (f"CA at {URL} refused simpleenroll: 401 Unauthorized; check the username and "
                               "password of the enrollment object (the CA says: bad password)")
    missing = status_problem(404, url=URL, operation="cacerts", reason="Not Found", detail="no such label",
                             hint="check the enrollment URL's path")
    assert missing.message == (f"CA at {URL} answered cacerts with 404 Not Found: no such label; check the "
                               "enrollment URL's path")
