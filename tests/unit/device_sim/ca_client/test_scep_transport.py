"""How the device's SCEP transport reports a CA's HTTP answers other than success, against real
HTTP servers on loopback: the same stable code, retryability and honoured Retry-After that the
EST transport gives for the same status (one table classifies both), and messages that name
the operation, the CA's own words and what to check."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.device_sim.ca_client.est_transport import EstEndpoint, EstSession
from services.device_sim.ca_client.network import CaFailure
from services.device_sim.ca_client.scep_transport import DEFAULT_PATH, ScepEndpoint, ScepSession
from services.device_sim.ca_client.trust import client_context
from tests.support.tls import TlsHandler, https_server, make_ca, make_leaf


class Answering:
    """Answers every request with ``server.answer``: (status, headers, body)."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        status, headers, body = self.server.answer
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


class PlainCa(Answering, BaseHTTPRequestHandler):
    pass


class TlsCa(Answering, TlsHandler):
    pass


@contextmanager
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PlainCa)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def pki():
    root = make_ca("Transport Test Root")
    return {"root": root, "server": make_leaf(root)}


@pytest.fixture
def scep_ca() -> Iterator[ThreadingHTTPServer]:
    with http_server() as server:
        yield server


@pytest.fixture
def est_ca(pki) -> Iterator[ThreadingHTTPServer]:
    with https_server(TlsCa, leaf=pki["server"]) as server:
        yield server


@pytest.fixture
def scep(scep_ca) -> Iterator[ScepSession]:
    with ScepSession(ScepEndpoint.parse(f"http://127.0.0.1:{scep_ca.server_address[1]}/"), timeout=5) as session:
        yield session


@pytest.fixture
async def est(est_ca, pki) -> AsyncIterator[EstSession]:
    endpoint = EstEndpoint.parse(f"https://127.0.0.1:{est_ca.server_address[1]}/")
    context = client_context(verify=True, anchors_pem=pki["root"].pem)
    async with EstSession(endpoint, context, timeout=5, trust="the test's root") as session:
        yield session


def scep_failure(scep: ScepSession) -> CaFailure:
    with pytest.raises(CaFailure) as raised:
        scep.get_ca_cert()
    return raised.value


TEXT = {"Content-Type": "text/plain"}


@pytest.mark.parametrize(("status", "headers", "code", "retryable", "retry_after"), [
    (503, {"Retry-After": "30"}, "ca_http_error", True, 30.0),
    (503, {"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}, "ca_http_error", True, 1.0),  # past: soonest
    (429, {"Retry-After": "12"}, "ca_http_error", True, 12.0),
    (500, {}, "ca_http_error", True, None),
    (502, {"Retry-After": "soon"}, "ca_http_error", True, None),
    (404, {"Retry-After": "5"}, "ca_http_error", False, None),
    (403, {}, "ca_http_error", False, None),
    (401, {}, "ca_auth_failed", False, None),
])
@pytest.mark.anyio
async def test_est_and_scep_classify_the_same_ca_answer_alike(scep_ca, scep, est_ca, est, status, headers, code,
                                                               retryable, retry_after):
    scep_ca.answer = est_ca.answer = (status, {**TEXT, **headers}, b"the CA's own words")
    by_est = est.http_failure(await est.get("cacerts"), "cacerts")
    by_scep = scep_failure(scep)
    assert (by_scep.code, by_scep.retryable, by_scep.retry_after) == (code, retryable, retry_after)
    assert (by_est.code, by_est.retryable, by_est.retry_after) == (code, retryable, retry_after)
    assert "the CA's own words" in by_scep.message and "the CA's own words" in by_est.message


def test_a_busy_ca_is_reported_with_its_words_and_the_operation(scep_ca, scep):
    scep_ca.answer = (503, {**TEXT, "Retry-After": "30"}, b"busy, come back later")
    failure = scep_failure(scep)
    assert failure.message == (f"CA at {scep.endpoint.url} answered GetCACert with 503 Service Unavailable: "
                               "busy, come back later")


def test_a_path_the_ca_does_not_serve_names_the_path_the_device_asked(scep_ca, scep):
    scep_ca.answer = (404, TEXT, b"")
    failure = scep_failure(scep)
    assert failure.message == (f"CA at {scep.endpoint.url} answered GetCACert with 404 Not Found: no explanation "
                               f"given; check the enrollment URL's path (the device asked {DEFAULT_PATH}; with "
                               f"no path it uses {DEFAULT_PATH})")


def test_a_ca_asking_for_an_http_login_is_told_apart_from_a_wrong_challenge_password(scep_ca, scep):
    scep_ca.answer = (401, {**TEXT, "WWW-Authenticate": 'Basic realm="ca"'}, b"login required")
    failure = scep_failure(scep)
    assert failure.message == (
        f"CA at {scep.endpoint.url} refused GetCACert: 401 Unauthorized; SCEP proves the device with the "
        "enrollment object's challenge password, not an HTTP login; check that the enrollment URL leads to "
        "the CA's SCEP service (the CA says: login required)")


def test_a_ca_that_does_not_know_getcacaps_offers_only_the_defaults(scep_ca, scep):
    scep_ca.answer = (404, TEXT, b"unknown operation")
    assert scep.get_ca_caps() == frozenset()
