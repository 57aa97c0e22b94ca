"""EST over HTTPS from the device, against a real HTTPS server on loopback that records what it
receives and answers as told: where an enrollment URL leads, what each request carries (method,
path, content type, basic auth), that an enrollment's requests share one TLS connection, and
how each answer other than success becomes a failure with a stable code, a message naming the
cause, and whether trying again later may help. An IPv6 literal URL reaches a server whose
certificate names that address, and a kept-alive connection the CA closed is opened anew."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from services.device_sim.ca_client.est_transport import CaFailure, EstEndpoint, EstSession
from services.device_sim.ca_client.trust import client_context
from tests.support.procs import free_port
from tests.support.tls import TlsHandler, https_server, ipv6_loopback, make_ca, make_leaf

pytestmark = pytest.mark.anyio

CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CSR = b"MIIBIjCByAIBADAaMRgwFgYDVQQDDA92cG4uZXhhbXBsZS5jb20w\n"


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class RecordingCa(TlsHandler):
    """Records each request in ``server.received`` and answers from ``server.answers``:
    path -> (status, headers, body); 404 for any other path."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.received.append(Received(self.command, self.path, headers, body))
        status, answer_headers, payload = self.server.answers.get(
            self.path, (404, {"Content-Type": "text/plain"}, b"no such operation"))
        self.send_response(status)
        for key, value in answer_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        # A CA that closes each kept-alive connection after one answer, without saying so.
        self.close_connection = self.server.quietly_closing

    do_GET = do_POST = _answer


@pytest.fixture(scope="module")
def pki():
    root = make_ca("EST Test Root")
    return {"root": root, "server": make_leaf(root)}


@pytest.fixture
def ca(pki) -> Iterator:
    with https_server(RecordingCa, leaf=pki["server"]) as server:
        server.received, server.answers, server.quietly_closing = [], {}, False
        yield server


@pytest.fixture
async def session(ca, pki) -> AsyncIterator[EstSession]:
    endpoint = EstEndpoint.parse(f"https://127.0.0.1:{ca.server_address[1]}/")
    context = client_context(verify=True, anchors_pem=pki["root"].pem)
    async with EstSession(endpoint, context, timeout=5, trust="the test's root") as est:
        yield est


# --- the enrollment URL ------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "shown", "host", "port", "base"), [
    ("https://ca.example.com/", "https://ca.example.com/", "ca.example.com", 443, "/.well-known/est"),
    (" https://ca.example.com ", "https://ca.example.com/", "ca.example.com", 443, "/.well-known/est"),
    ("https://ca.example.com:8443/.well-known/est/asa/", "https://ca.example.com:8443/.well-known/est/asa/",
     "ca.example.com", 8443, "/.well-known/est/asa"),
    # strongSwan's pki reads a path as the CA label: https://host/<label>
    ("https://ca.example.com/asa", "https://ca.example.com/asa", "ca.example.com", 443, "/asa/.well-known/est"),
    ("https://[2001:db8::5]:8443/", "https://[2001:db8::5]:8443/", "2001:db8::5", 8443, "/.well-known/est"),
    ("https://enroller:s3cret@ca.example.com/", "https://ca.example.com/", "ca.example.com", 443,
     "/.well-known/est"),
])
def test_the_enrollment_url_says_where_the_est_operations_are(url, shown, host, port, base):
    endpoint = EstEndpoint.parse(url)
    assert (endpoint.url, endpoint.host, endpoint.port, endpoint.base_path) == (shown, host, port, base)
    assert endpoint.path("simpleenroll") == f"{base}/simpleenroll"
    assert "s3cret" not in repr(endpoint)


@pytest.mark.parametrize(("url", "says"), [
    ("http://ca.example.com/", "is not an https:// URL with a host; EST runs over HTTPS only"),
    ("https:///.well-known/est", "is not an https:// URL with a host"),
    ("https://[2001:db8::5/", "IPv6 addresses go in brackets, e.g. https://[2001:db8::5]/"),
    ("https://ca.example.com:99999/", "is not a valid URL"),
])
def test_an_enrollment_url_est_cannot_use_is_refused(url, says):
    with pytest.raises(CaFailure) as refused:
        EstEndpoint.parse(url)
    assert refused.value.code == "invalid_enrollment_url"
    assert refused.value.message.startswith(f"enrollment URL {url!r} ") and says in refused.value.message


# --- what the device sends ---------------------------------------------------------------------------

async def test_the_ca_certificates_are_asked_for_with_a_get_and_read_whole(ca, session):
    chain = b"MIIGAQYJKoZIhvcNAQcCoIIF8jCCBe4CAQExADALBgkqhkiG9w0BBwGgggXU" * 100
    ca.answers["/.well-known/est/cacerts"] = (200, {"Content-Type": CERTS_ONLY,
                                                    "Content-Transfer-Encoding": "base64"}, chain)
    answer = await session.get("cacerts")
    assert (answer.status, answer.reason, answer.body) == (200, "OK", chain)
    assert answer.headers["content-type"] == CERTS_ONLY  # header names in lower case
    assert answer.headers["content-transfer-encoding"] == "base64"
    (request,) = ca.received
    assert (request.method, request.path, request.body) == ("GET", "/.well-known/est/cacerts", b"")
    assert "authorization" not in request.headers


async def test_a_csr_is_posted_in_base64_with_the_enrollment_objects_credentials(ca, session):
    ca.answers["/.well-known/est/simpleenroll"] = (200, {"Content-Type": CERTS_ONLY}, b"MIIC")
    answer = await session.post_csr("simpleenroll", CSR, auth=("ftd-enroller", "pässword:with-colon"))
    assert answer.status == 200
    (request,) = ca.received
    assert (request.method, request.path, request.body) == ("POST", "/.well-known/est/simpleenroll", CSR)
    assert request.headers["content-type"] == "application/pkcs10"
    assert request.headers["content-transfer-encoding"] == "base64"
    scheme, _, credentials = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode() == "ftd-enroller:pässword:with-colon"


async def test_a_renewal_authenticated_by_the_certificate_sends_no_password(ca, session):
    await session.post_csr("simplereenroll", CSR, auth=None)
    (request,) = ca.received
    assert request.path == "/.well-known/est/simplereenroll" and "authorization" not in request.headers


async def test_an_enrollments_requests_share_one_tls_connection(ca, session):
    for path in ("cacerts", "csrattrs", "simpleenroll"):
        ca.answers[f"/.well-known/est/{path}"] = (200, {"Content-Type": CERTS_ONLY}, b"MII")
    await session.get("cacerts")
    await session.get("csrattrs")
    await session.post_csr("simpleenroll", CSR, auth=("u", "p"))
    assert [r.path.rsplit("/", 1)[1] for r in ca.received] == ["cacerts", "csrattrs", "simpleenroll"]
    assert ca.handshakes == 1


async def test_a_kept_alive_connection_the_ca_closed_is_opened_anew(ca, session):
    ca.quietly_closing = True
    ca.answers["/.well-known/est/cacerts"] = (200, {"Content-Type": CERTS_ONLY}, b"MII")
    answers = [await session.get("cacerts") for _ in range(3)]
    assert [(a.status, a.body) for a in answers] == [(200, b"MII")] * 3
    assert ca.handshakes == 3


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize(("names", "trusted"), [(["::1"], True), (["127.0.0.1", "localhost"], False)])
async def test_an_ipv6_literal_url_reaches_a_server_that_names_the_address(pki, names, trusted):
    with https_server(RecordingCa, leaf=make_leaf(pki["root"], hosts=names), host="::1") as server:
        server.received, server.quietly_closing = [], False
        server.answers = {"/.well-known/est/cacerts": (200, {"Content-Type": CERTS_ONLY}, b"MII")}
        endpoint = EstEndpoint.parse(f"https://[::1]:{server.server_address[1]}/")
        context = client_context(verify=True, anchors_pem=pki["root"].pem)
        async with EstSession(endpoint, context, timeout=5, trust="the test's root") as est:
            if trusted:
                assert (await est.get("cacerts")).body == b"MII"
                assert [r.headers["host"] for r in server.received] == [f"[::1]:{server.server_address[1]}"]
                return
            with pytest.raises(CaFailure) as refused:
                await est.get("cacerts")
    assert refused.value.code == "ca_tls_verification_failed"
    assert refused.value.message == (f"CA at {endpoint.url}: TLS verification failed: IP address mismatch, "
                                     "certificate is not valid for '::1'. (server checked against the test's root)")
    assert server.received == []


# --- answers other than success ----------------------------------------------------------------------

def problem(detail: str) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": "application/problem+json"}, json.dumps({"title": "Refused", "detail": detail}).encode()


@pytest.mark.parametrize(("flags", "hint"), [
    ({"sent_password": True}, "check the username and password of the enrollment object"),
    ({}, "the CA wants a username and password: set them in the enrollment object"),
    ({"renewing": True}, "the CA did not accept the device's current certificate; enroll the trustpoint anew"),
])
async def test_401_is_an_authentication_failure_whose_hint_fits_what_the_device_sent(ca, session, flags, hint):
    ca.answers["/.well-known/est/simpleenroll"] = (401, *problem("credentials   not\naccepted"))
    answer = await session.post_csr("simpleenroll", CSR, auth=("u", "wrong"))
    failure = session.http_failure(answer, "simpleenroll", **flags)
    assert failure.code == "ca_auth_failed" and not failure.retryable
    assert failure.message == (f"CA at {session.endpoint.url} refused simpleenroll: 401 Unauthorized; {hint} "
                               "(the CA says: credentials not accepted)")


@pytest.mark.parametrize(("status", "headers", "retryable", "retry_after"), [
    (503, {"Retry-After": "7"}, True, 7.0),
    (429, {"Retry-After": "2"}, True, 2.0),
    (500, {}, True, None),
    (502, {}, True, None),
    (400, {}, False, None),
    (404, {"Retry-After": "5"}, False, None),  # a wait is honoured only from a busy CA
])
async def test_other_statuses_are_http_errors_retryable_when_the_ca_is_busy_or_failing(
        ca, session, status, headers, retryable, retry_after):
    ca.answers["/.well-known/est/simpleenroll"] = (status, {"Content-Type": "text/plain", **headers},
                                                   b"the CA's own words")
    answer = await session.post_csr("simpleenroll", CSR, auth=("u", "p"))
    failure = session.http_failure(answer, "simpleenroll")
    assert failure.code == "ca_http_error"
    assert (failure.retryable, failure.retry_after) == (retryable, retry_after)
    assert failure.message == (f"CA at {session.endpoint.url} answered simpleenroll with "
                               f"{status} {answer.reason}: the CA's own words")


async def test_an_answer_without_explanation_says_so(ca, session):
    ca.answers["/.well-known/est/cacerts"] = (500, {}, b"")
    failure = session.http_failure(await session.get("cacerts"), "cacerts")
    assert failure.message.endswith("answered cacerts with 500 Internal Server Error: no explanation given")


# --- a server the device cannot use ----------------------------------------------------------------

async def test_a_server_the_device_does_not_trust_fails_naming_what_it_was_checked_against(ca):
    endpoint = EstEndpoint.parse(f"https://127.0.0.1:{ca.server_address[1]}/")
    context = client_context(verify=True, anchors_pem=make_ca("Some Other Root").pem)
    async with EstSession(endpoint, context, timeout=5, trust="the fingerprint-pinned CA") as est:
        with pytest.raises(CaFailure) as refused:
            await est.get("cacerts")
    assert refused.value.code == "ca_tls_verification_failed" and not refused.value.retryable
    assert refused.value.message == (f"CA at {endpoint.url}: TLS verification failed: unable to get local "
                                     "issuer certificate (server checked against the fingerprint-pinned CA)")
    assert ca.received == []  # nothing reached a server the device does not trust


async def test_a_port_nobody_listens_on_is_a_refused_connection_worth_retrying():
    port = free_port()
    endpoint = EstEndpoint.parse(f"https://127.0.0.1:{port}/")
    async with EstSession(endpoint, client_context(verify=False), timeout=5, trust="") as est:
        with pytest.raises(CaFailure) as refused:
            await est.get("cacerts")
    assert refused.value.code == "ca_connection_refused" and refused.value.retryable
    assert f"is its EST service listening on port {port}?" in refused.value.message
