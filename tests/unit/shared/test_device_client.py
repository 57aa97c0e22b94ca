"""The device client turns every way a device can answer (or not) into the error a job
needs: transient for timeouts, refused or reset connections and 5xx, permanent with the
device's own code for 4xx. Real HTTP on loopback: a small scripted server plays the device
so each failure happens on demand."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.device_client import DeviceTransientError, HttpDeviceClient
from shared.enrollment import EnrollmentParameters
from shared.errors import PermanentError, TransientError
from shared.sealed_secrets import seal_configuration
from tests.support.tls import TlsHandler, https_server, make_ca, make_leaf

WEAK_CRYPTO_MESSAGE = "weak crypto: RSA-1024; enable weak-crypto on the device to accept it"
BUNDLE = {"version": "7", "certificates": 2, "sha256": "ab" * 32}
TRUSTPOINT = {"name": "vpn", "enrollment_type": "self_signed", "ca_status": "in_progress",
              "identity_status": "in_progress"}


class ScriptedDevice(BaseHTTPRequestHandler):
    """Answers by the last path segment's scenario, set per test in ``server.scenario``."""

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.server.requests.append((self.command, self.path, self.rfile.read(length) if length else b""))
        scenario = self.server.scenario
        if scenario == "slow":
            self.server.release.wait(10)  # holds the answer until the test ends
        if scenario == "hang_up":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, body, headers = {
            "ok": (200, TRUSTPOINT, {}),
            "slow": (200, TRUSTPOINT, {}),
            "busy": (503, {"code": "busy", "message": "device manager restarting"}, {"Retry-After": "2"}),
            "busy_until": (503, {"code": "busy", "message": "device manager restarting"},
                           {"Retry-After": "Tue, 01 Jan 2030 12:00:40 GMT"}),
            "busy_garbled": (429, {"code": "busy", "message": "too many requests"}, {"Retry-After": "later"}),
            "manager_cannot_reach": (503, {"code": "device_unreachable", "message": "no route to device"},
                                     {}),
            "weak": (422, {"code": "weak_crypto", "message": WEAK_CRYPTO_MESSAGE}, {}),
            "no_trustpoint": (404, {"code": "trustpoint_not_found", "message": "no trustpoint vpn"}, {}),
            "no_device": (404, {"code": "device_not_found", "message": "no device FTD-9"}, {}),
            "garbage": (200, "<html>proxy login</html>", {}),
            "deleted": (204, None, {}),
            "bundle": (200, BUNDLE, {}),
            "bad_bundle": (422, {"code": "invalid_ca_bundle", "message": "the CA bundle holds no readable PEM "
                                                                        "certificate"}, {}),
        }[scenario]
        text = body if isinstance(body, str) or body is None else json.dumps(body)
        payload = (text or "").encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = _answer


@dataclass
class Device:
    serial: str
    management_url: str


@pytest.fixture
def device_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedDevice)
    server.scenario, server.requests, server.release = "ok", [], threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def device(device_server):
    return Device("FTD-000042", f"http://127.0.0.1:{device_server.server_address[1]}/api/devices/FTD-000042")


@pytest.fixture
def client():
    client = HttpDeviceClient(timeout_seconds=0.3)
    yield client
    client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_configure_puts_the_trustpoint_configuration_to_the_device_path(client, device, device_server):
    params = EnrollmentParameters(name="vpn", enrollment_type="self_signed", key_type="ecdsa", key_size=256)
    state = client.configure_trustpoint(device, params)
    assert state.name == "vpn" and state.ca_status == "in_progress"
    method, path, body = device_server.requests[-1]
    assert (method, path) == ("PUT", "/api/devices/FTD-000042/trustpoints/vpn")
    assert json.loads(body)["key_type"] == "ecdsa"
    client.enroll(device, "vpn", "re_enroll")
    assert device_server.requests[-1][:2] == ("POST", "/api/devices/FTD-000042/trustpoints/vpn/enroll")
    assert json.loads(device_server.requests[-1][2]) == {"mode": "re_enroll"}


def test_a_secret_in_clear_is_refused_before_anything_is_sent_and_a_sealed_one_goes(client, device, device_server):
    params = EnrollmentParameters(name="vpn", enrollment_type="est", options={
        "enrollment_url": "https://ca.example.net/.well-known/est/", "username": "fw", "password": "est-Secret-1"})
    for send in (lambda: client.configure_trustpoint(device, params),
                 lambda: client.enroll(device, "vpn", configuration=params)):
        with pytest.raises(PermanentError) as caught:
            send()
        assert caught.value.code == "secret_not_sealed" and "est-Secret-1" not in caught.value.message
    assert device_server.requests == []
    sealed = seal_configuration(params, credential="device-credential-0042-abcdef-0123456789", serial=device.serial)
    client.enroll(device, "vpn", configuration=sealed)
    body = device_server.requests[-1][2]
    assert json.loads(body) == {"mode": "enroll", "configuration": sealed.wire} and b"est-Secret-1" not in body


def test_refused_connection_is_transient_and_names_device_and_url(client):
    url = f"http://127.0.0.1:{free_port()}/api/devices/FTD-000042"
    with pytest.raises(DeviceTransientError) as caught:
        client.get_trustpoint(Device("FTD-000042", url), "vpn")
    err = caught.value
    assert err.code == "device_unreachable"
    assert str(err) == f"device FTD-000042 unreachable: connection refused ({url})"
    assert err.after_attempts(5) == (
        f"device FTD-000042 unreachable after 5 attempts: connection refused ({url})"
    )


def test_no_answer_in_time_is_a_device_timeout(client, device, device_server):
    device_server.scenario = "slow"
    with pytest.raises(DeviceTransientError) as caught:
        client.get_trustpoint(device, "vpn")
    # The device got the request and holds its answer until the test ends: the client gave up first.
    assert device_server.requests == [("GET", "/api/devices/FTD-000042/trustpoints/vpn", b"")]
    assert caught.value.code == "device_timeout"
    assert "no answer within 0.3 s" in str(caught.value) and device.management_url in str(caught.value)


def test_connection_dropped_without_answer_is_transient(client, device, device_server):
    device_server.scenario = "hang_up"
    with pytest.raises(DeviceTransientError) as caught:
        client.get_trustpoint(device, "vpn")
    assert caught.value.code == "device_unreachable"


def test_5xx_is_transient_with_the_device_message_and_retry_after(client, device, device_server):
    device_server.scenario = "busy"
    with pytest.raises(TransientError) as caught:
        client.enroll(device, "vpn")
    assert caught.value.code == "device_error"
    assert caught.value.retry_after == 2.0
    assert "device FTD-000042 answered 503" in str(caught.value)
    assert "device manager restarting" in str(caught.value)


def test_a_retry_after_date_counts_from_when_the_answer_arrived_and_garble_is_ignored(device, device_server):
    arrived = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    client = HttpDeviceClient(timeout_seconds=2, clock=lambda: arrived)
    try:
        device_server.scenario = "busy_until"
        with pytest.raises(DeviceTransientError) as until:
            client.enroll(device, "vpn")
        device_server.scenario = "busy_garbled"
        with pytest.raises(DeviceTransientError) as garbled:
            client.enroll(device, "vpn")
    finally:
        client.close()
    assert until.value.retry_after == 40.0
    assert garbled.value.code == "device_error" and garbled.value.retry_after is None


def test_device_manager_saying_the_device_is_unreachable_keeps_that_code(client, device, device_server):
    device_server.scenario = "manager_cannot_reach"
    with pytest.raises(DeviceTransientError) as caught:
        client.get_trustpoint(device, "vpn")
    assert caught.value.code == "device_unreachable"
    assert str(caught.value) == f"device FTD-000042 unreachable: no route to device ({device.management_url})"


def test_4xx_is_permanent_with_the_device_code_and_message(client, device, device_server):
    device_server.scenario = "weak"
    params = EnrollmentParameters(name="vpn", enrollment_type="self_signed", key_type="rsa", key_size=1024)
    with pytest.raises(PermanentError) as caught:
        client.configure_trustpoint(device, params)
    assert caught.value.code == "weak_crypto"
    assert str(caught.value).startswith("device FTD-000042: weak crypto: RSA-1024")


def test_missing_trustpoint_is_none_and_deleting_it_again_is_fine(client, device, device_server):
    device_server.scenario = "no_trustpoint"
    assert client.get_trustpoint(device, "vpn") is None
    client.delete_trustpoint(device, "vpn")  # already gone: done, no error
    device_server.scenario = "deleted"
    client.delete_trustpoint(device, "vpn")
    path = "/api/devices/FTD-000042/trustpoints/vpn"
    assert [r[:2] for r in device_server.requests] == [("GET", path), ("DELETE", path), ("DELETE", path)]


def test_unknown_device_is_not_mistaken_for_a_missing_trustpoint(client, device, device_server):
    device_server.scenario = "no_device"
    with pytest.raises(PermanentError) as caught:
        client.get_trustpoint(device, "vpn")
    assert caught.value.code == "device_not_found"


def test_answer_outside_the_contract_is_a_clear_permanent_error(client, device, device_server):
    device_server.scenario = "garbage"
    with pytest.raises(PermanentError) as caught:
        client.get_trustpoint(device, "vpn")
    assert caught.value.code == "device_bad_response"
    assert "does not follow the device-management API" in str(caught.value)


def test_unusable_management_url_is_permanent(client):
    with pytest.raises(PermanentError) as caught:
        client.get_keyring(Device("FTD-1", "ftp://device.example/api"))
    assert caught.value.code == "invalid_management_url"


# --- the CA bundle ---------------------------------------------------------------------------------

def test_the_ca_bundle_is_read_and_pushed_at_the_device_path(client, device, device_server):
    device_server.scenario = "bundle"
    held = client.get_ca_bundle(device)
    pushed = client.put_ca_bundle(device, "7", "-----BEGIN CERTIFICATE-----\n…")
    assert held == pushed and (held.version, held.certificates, held.sha256) == ("7", 2, "ab" * 32)
    path = "/api/devices/FTD-000042/ca-bundle"
    assert [r[:2] for r in device_server.requests] == [("GET", path), ("PUT", path)]
    assert json.loads(device_server.requests[-1][2]) == {"version": "7", "pem": "-----BEGIN CERTIFICATE-----\n…"}


@pytest.mark.parametrize(("scenario", "error", "code"), [
    ("busy", DeviceTransientError, "device_error"),
    ("manager_cannot_reach", DeviceTransientError, "device_unreachable"),
    ("slow", DeviceTransientError, "device_timeout"),
    ("bad_bundle", PermanentError, "invalid_ca_bundle"),
    ("no_device", PermanentError, "device_not_found"),
    ("garbage", PermanentError, "device_bad_response"),
])
def test_ca_bundle_calls_fail_as_every_other_call_does(client, device, device_server, scenario, error, code):
    device_server.scenario = scenario
    for call in (lambda: client.get_ca_bundle(device), lambda: client.put_ca_bundle(device, "7", "PEM")):
        with pytest.raises(error) as caught:
            call()
        assert caught.value.code == code
        assert isinstance(caught.value, TransientError) == (error is DeviceTransientError)


# --- the transport: framing, kept-alive connections, bounds ------------------------------------------

class KeepAliveDevice(BaseHTTPRequestHandler):
    """An HTTP/1.1 device that keeps connections open, framing answers as ``server.framing`` says;
    it records each request with the client's port, so a reused connection shows as the same port."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.client_address[1], self.path))
        payload = json.dumps(TRUSTPOINT).encode()
        framing = self.server.framing
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if framing == "chunked":
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for piece in (payload[:10], payload[10:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif framing == "until_close":
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True
        elif framing == "huge":
            self.send_header("content-length", str(3 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b" " * (3 * 1024 * 1024))
        else:
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        if self.server.close_after:
            self.close_connection = True


@pytest.fixture
def keep_alive_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAliveDevice)
    server.framing, server.close_after, server.requests = "length", False, []
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _device_at(server, host: str = "127.0.0.1") -> Device:
    shown = f"[{host}]" if ":" in host else host
    return Device("FTD-000042", f"http://{shown}:{server.server_address[1]}/api/devices/FTD-000042")


def test_answers_chunked_or_ended_by_the_connection_read_whole(client, keep_alive_server):
    device = _device_at(keep_alive_server)
    for framing in ("chunked", "until_close", "length"):
        keep_alive_server.framing = framing
        state = client.get_trustpoint(device, "vpn")
        assert (state.name, state.ca_status) == ("vpn", "in_progress"), framing


def test_a_kept_alive_connection_serves_the_next_request_and_one_the_device_closed_is_replaced(
        client, keep_alive_server):
    device = _device_at(keep_alive_server)
    neighbour = Device("FTD-000043", device.management_url.replace("FTD-000042", "FTD-000043"))
    client.get_trustpoint(device, "vpn")
    client.get_trustpoint(neighbour, "vpn")
    (first, path), (second, neighbours_path) = keep_alive_server.requests
    # One connection, kept alive between the requests, for every device behind this host and port.
    assert first == second and neighbours_path == "/api/devices/FTD-000043/trustpoints/vpn"
    keep_alive_server.close_after = True
    client.get_trustpoint(device, "vpn")  # the device closes this connection after answering
    keep_alive_server.close_after = False
    assert client.get_trustpoint(device, "vpn").name == "vpn"  # not sent on the closed one
    assert keep_alive_server.requests[3][0] != first


def test_an_answer_over_the_bound_is_refused_not_read_into_memory(client, keep_alive_server, monkeypatch):
    from shared import device_http

    monkeypatch.setattr(device_http, "MAX_ANSWER_BYTES", 1024 * 1024)
    keep_alive_server.framing = "huge"
    with pytest.raises(PermanentError) as caught:
        client.get_trustpoint(_device_at(keep_alive_server), "vpn")
    assert caught.value.code == "device_bad_response" and "more than 1 MiB" in str(caught.value)


def test_a_device_at_an_ipv6_address_is_reached():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")

    class V6Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    try:
        server = V6Server(("::1", 0), KeepAliveDevice)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    server.framing, server.close_after, server.requests = "length", False, []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    client = HttpDeviceClient(timeout_seconds=2)
    try:
        assert client.get_trustpoint(_device_at(server, "::1"), "vpn").name == "vpn"
    finally:
        client.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://device.example/api", "scheme 'ftp' is not http or https"),
    ("http:///api/devices/FTD-1", "it names no host"),
    ("http://device.example:99999/api", "Port out of range"),
])
def test_each_unusable_management_url_says_what_is_wrong(client, url, problem):
    with pytest.raises(PermanentError) as caught:
        client.get_keyring(Device("FTD-1", url))
    assert caught.value.code == "invalid_management_url" and problem in str(caught.value)


def test_a_name_that_does_not_resolve_is_unreachable(client):
    with pytest.raises(DeviceTransientError) as caught:
        client.get_keyring(Device("FTD-1", "http://no-such-device.invalid/api/devices/FTD-1"))
    assert caught.value.code == "device_unreachable" and "host name does not resolve" in str(caught.value)


class TlsDevice(TlsHandler):
    def do_GET(self) -> None:
        self.server.requests = getattr(self.server, "requests", 0) + 1
        payload = json.dumps(TRUSTPOINT).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_an_https_device_is_verified_against_the_trust_store_and_its_connection_kept():
    device_ca, other_ca = make_ca("Device CA"), make_ca("Other CA")
    with https_server(TlsDevice, leaf=make_leaf(device_ca)) as server:
        url = f"https://127.0.0.1:{server.server_address[1]}/api/devices/FTD-000042"
        trusting = ssl.create_default_context(cadata=device_ca.pem)
        client = HttpDeviceClient(timeout_seconds=2, tls=trusting)
        try:
            for _ in range(3):
                assert client.get_trustpoint(Device("FTD-000042", url), "vpn").name == "vpn"
        finally:
            client.close()
        assert (server.handshakes, server.requests) == (1, 3)  # one TLS connection for all three
        stranger = HttpDeviceClient(timeout_seconds=2, tls=ssl.create_default_context(cadata=other_ca.pem))
        try:
            with pytest.raises(DeviceTransientError) as caught:
                stranger.get_trustpoint(Device("FTD-000042", url), "vpn")
        finally:
            stranger.close()
    assert caught.value.code == "device_unreachable" and "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert server.requests == 3  # nothing reached the device over the unverified connection


def test_headers_without_end_are_cut_off(client):
    """A device that streams header lines and never ends its head: refused once the head passes
    its bound, not read for as long as each line keeps coming within the timeout."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        def endless_head() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\n")
                try:
                    for n in range(100_000):
                        connection.sendall(b"X-Filler-%d: %s\r\n" % (n, b"a" * 100))
                except OSError:
                    pass  # the client gave up: what the test expects

        thread = threading.Thread(target=endless_head, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/api/devices/FTD-1"
        with pytest.raises(PermanentError) as caught:
            client.get_keyring(Device("FTD-1", url))
        thread.join(10)
    assert caught.value.code == "device_bad_response"
    assert "status line and headers of more than 64 KiB" in str(caught.value)


def test_a_request_ending_after_close_does_not_keep_its_connection(keep_alive_server):
    client = HttpDeviceClient(timeout_seconds=2)
    device = _device_at(keep_alive_server)
    client.get_trustpoint(device, "vpn")
    client.close()
    assert client._http._idle == {}
    client.get_trustpoint(device, "vpn")  # still answers, on a connection it does not keep
    assert client._http._idle == {}
    assert len({port for port, _ in keep_alive_server.requests}) == 2
