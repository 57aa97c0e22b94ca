"""The device endpoints reach their handlers without Starlette's router (services/device_sim/dispatch.py),
and a client cannot tell: every request gets the answer the Starlette application gives, errors included."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from services.device_sim import wire
from services.device_sim.app import DeviceSim, create_app
from services.device_sim.config import SimConfig
from services.device_sim.dispatch import DeviceDispatch, path_shape

DEVICE = "/api/devices/FTD-000001"
NONCE = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="  # base64 of 32 bytes
CONFIGURATION = {"name": "vpn", "enrollment_type": "self_signed", "key_type": "ecdsa", "key_size": 256,
                 "subject": {"common_name": "vpn.example.com"}, "validity_days": 30}
Request = tuple[str, str, Any]

# In order: later requests see what earlier ones changed (a configured trustpoint, for one).
REQUESTS: list[Request] = [
    ("GET", DEVICE, None),
    ("HEAD", DEVICE, None),
    ("GET", DEVICE + "/", None),  # Starlette's redirect to the path without the slash
    ("GET", "/api/devices/FTD-999999", None),
    ("GET", "/api/devices//trustpoints", None),
    ("GET", "/api/devices/FTD-000001/trustpoints/vpn/certificate", None),
    ("GET", DEVICE + "/keyring", None),
    ("DELETE", DEVICE + "/authenticate", None),
    ("GET", DEVICE + "/trustpoints/vpn/enroll", None),
    ("GET", DEVICE + "/trustpoints/vpn", None),
    ("PUT", DEVICE + "/trustpoints/vpn", CONFIGURATION),
    ("GET", DEVICE + "/trustpoints/vpn", None),
    ("GET", DEVICE + "/trustpoints", None),
    ("PUT", DEVICE + "/trustpoints/bad%20name", {**CONFIGURATION, "name": "bad name"}),
    ("PUT", DEVICE + "/trustpoints/x", b"{not json"),
    ("PUT", DEVICE + "/trustpoints/x", ["a", "list"]),
    ("POST", DEVICE + "/trustpoints/vpn/enroll", {"mode": "sideways"}),
    ("POST", DEVICE + "/trustpoints/other/enroll", {"mode": "enroll"}),
    ("POST", DEVICE + "/authenticate", {"nonce": NONCE}),  # no such endpoint: secrets travel sealed
    ("PUT", DEVICE + "/weak-crypto", {"enabled": "maybe"}),
    ("GET", DEVICE + "/ca-bundle", None),
    ("PUT", DEVICE + "/ca-bundle", {"version": "7", "pem": "not a certificate"}),
    ("DELETE", DEVICE + "/trustpoints/vpn", None),
    ("GET", "/api/inventory?limit=2", None),
    ("GET", "/api/trustpoints", None),
]


def simulator() -> DeviceSim:
    sim = DeviceSim(SimConfig(devices=5, seed=7, credential_key="dispatch-test-fleet-key"))
    sim.base_url = "http://device-sim.test"
    return sim


async def answers(app: Any, requests: list[Request]) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://device-sim.test") as client:
        found = []
        for method, path, body in requests:
            content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            response = await client.request(method, path, content=content)
            found.append((response.status_code, response.headers.multi_items(), response.content))
        return found


def test_every_request_gets_the_answer_the_starlette_application_gives() -> None:
    dispatched = create_app(simulator())
    routed = create_app(simulator()).app  # the same application, every request through its router
    expected = asyncio.run(answers(routed, REQUESTS))
    assert asyncio.run(answers(dispatched, REQUESTS)) == expected
    statuses = [status for status, _, _ in expected]
    assert {200, 204, 307, 404, 405, 422} <= set(statuses), "the requests cover answers and errors alike"


def test_the_device_endpoints_do_not_go_through_the_router() -> None:
    dispatch = create_app(simulator())

    async def no_router(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError(f"{scope['method']} {scope['path']} went through the router")

    dispatch.app = no_router  # type: ignore[assignment]
    hot = [("POST", DEVICE + "/trustpoints/vpn/enroll", {"mode": "enroll", "configuration": CONFIGURATION}),
           ("GET", DEVICE + "/trustpoints/vpn", None),
           ("GET", DEVICE + "/keyring/default", None),
           ("PUT", DEVICE + "/ca-bundle", {"version": "7", "pem": "not a certificate"}),
           ("GET", DEVICE + "/ca-bundle", None)]
    assert [status for status, _, _ in asyncio.run(answers(dispatch, hot))] == [200, 200, 200, 422, 200]


def test_an_unexpected_failure_is_answered_500_and_raised_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_bundle: object) -> None:
        raise RuntimeError("the CA bundle view broke")

    monkeypatch.setattr(wire, "ca_bundle_state", broken)
    for app in (create_app(simulator()), create_app(simulator()).app):
        with pytest.raises(RuntimeError, match="the CA bundle view broke"):  # for the server to log
            asyncio.run(app(request_scope("GET", DEVICE + "/ca-bundle"), no_body, sent := Sent()))
        assert sent.messages[0]["status"] == 500
        assert json.loads(sent.messages[1]["body"]) == {"code": "internal_error",
                                                        "message": "the device simulator failed; see its log"}


def request_scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "headers": [], "scheme": "http", "server": ("device-sim.test", 80)}


async def no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class Sent:
    """The ASGI messages an application sends."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/api/devices/FTD-000001", ("", {"serial": "FTD-000001"})),
     ("/api/devices/FTD-000001/trustpoints", ("trustpoints", {"serial": "FTD-000001"})),
     ("/api/devices/FTD-000001/trustpoints/vpn/enroll",
      ("trustpoints/{name}/enroll", {"serial": "FTD-000001", "name": "vpn"})),
     ("/api/devices/FTD-000001/keyring/default", ("keyring/default", {"serial": "FTD-000001"})),
     ("/api/devices/FTD-000001/trustpoints//enroll", None),
     ("/api/devices/", None),
     ("/api/inventory", None)],
)
def test_a_path_shape_names_the_serial_and_the_trustpoint(path: str, shape: Any) -> None:
    assert path_shape(path) == shape


def test_every_device_route_has_a_shape_of_its_own() -> None:
    dispatch = create_app(simulator())
    assert isinstance(dispatch, DeviceDispatch)
    device_routes = [(method, route.path) for route in dispatch.app.routes
                     if route.path.startswith("/api/devices/") for method in route.methods]
    assert len(dispatch.endpoints) == len(device_routes)
