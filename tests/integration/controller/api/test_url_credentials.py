"""A client that puts a user name and password into a URL (https://user:secret@ca/) would have
the secret stored in a field the API returns and the controller logs. Every URL the API takes
refuses that with 422 url_credentials_not_allowed, stores nothing, and never repeats the secret
in its answer or its logs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlmodel import Session, select
from structlog.testing import capture_logs

from shared.models import Device, EnrollmentObject
from tests.support.api import GLOBAL, problem

SECRET = "Pa55-in-url"
CODE = "url_credentials_not_allowed"
OBJECTS = f"/domains/{GLOBAL}/enrollment-objects"
DEVICES = f"/domains/{GLOBAL}/devices"
EST = {"name": "vpn-est", "enrollment_type": "est", "enrollment_url": "https://ca.example.com/.well-known/est",
       "username": "fw", "password": "kept-apart", "key_type": "ecdsa", "key_size": 256}


def refused_quietly(api, method: str, path: str, body: dict) -> dict:
    """The 422 problem for ``body``; neither it nor any log line holds the secret."""
    with capture_logs() as logs:
        answer = problem(api.call(method, path, json=body), 422, CODE)
    assert SECRET not in json.dumps(answer) and SECRET not in json.dumps(logs, default=str)
    return answer


def stored_objects(api) -> list[EnrollmentObject]:
    with Session(api.engine) as session:
        return list(session.exec(select(EnrollmentObject)).all())


@pytest.mark.parametrize(("field", "value"), [
    ("enrollment_url", f"https://fw:{SECRET}@ca.example.com/.well-known/est"),
    ("ocsp_url", f"http://ocsp:{SECRET}@ocsp.example.com/"),
    ("crl_urls", ["http://crl.example.com/root.crl", f"http://{SECRET}@crl.example.com/sub.crl"]),
])
def test_an_enrollment_object_whose_url_carries_credentials_is_refused_and_not_stored(api, field, value):
    answer = refused_quietly(api, "POST", OBJECTS, {**EST, field: value})
    assert answer["detail"].startswith(f"{field} 'http")
    assert "…@" in answer["detail"] and "instead" in answer["detail"]
    assert stored_objects(api) == []
    assert api.ok("GET", OBJECTS)["total"] == 0


def test_the_est_message_says_where_the_credentials_belong(api):
    answer = refused_quietly(api, "POST", OBJECTS, {**EST, "enrollment_url": f"https://fw:{SECRET}@ca.example.com/"})
    assert answer["detail"] == (
        "enrollment_url 'https://…@ca.example.com/' carries a user name or password before the host, and a URL is "
        "stored and shown as sent: send 'https://ca.example.com/' instead; an EST CA's user name and password go "
        "in the enrollment object's username and password fields (SCEP uses challenge_password)")


def test_replacing_an_object_with_credentials_in_its_url_leaves_it_as_it_was(api):
    created = api.ok("POST", OBJECTS, EST, status=201)
    path = f"{OBJECTS}/{created['id']}"
    scep = {"name": "vpn-est", "enrollment_type": "scep", "key_type": "ecdsa", "key_size": 256,
            "enrollment_url": f"http://admin:{SECRET}@ca.example.com/cgi-bin/pkiclient.exe"}
    refused_quietly(api, "PUT", path, scep)
    assert api.ok("GET", path) == created
    assert [o.enrollment_url for o in stored_objects(api)] == [EST["enrollment_url"]]


def test_a_device_whose_management_url_carries_credentials_is_refused_and_not_stored(api):
    body = {"name": "fw-1", "serial": "FTD-URL-1", "management_url": f"http://admin:{SECRET}@127.0.0.1:8400/api"}
    answer = refused_quietly(api, "POST", DEVICES, body)
    assert answer["detail"].startswith("management_url 'http://…@127.0.0.1:8400/api' carries a user name or")
    assert api.ok("GET", DEVICES)["total"] == 0
    with Session(api.engine) as session:
        assert session.exec(select(Device)).all() == []


class Inventory(BaseHTTPRequestHandler):
    """A device-management API's inventory: ``server.items`` on one page; every request is kept
    in ``server.requests`` with its Authorization header."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append((self.path, self.headers.get("Authorization")))
        payload = json.dumps({"items": self.server.items, "total": len(self.server.items)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def inventory(items: list[dict]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Inventory)
    server.items, server.requests = items, []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_an_inventory_url_with_credentials_is_refused_before_anything_is_sent(api):
    with inventory([]) as server:
        port = server.server_address[1]
        answer = refused_quietly(api, "POST", f"{DEVICES}/import",
                                 {"inventory_url": f"http://reader:{SECRET}@127.0.0.1:{port}"})
        assert server.requests == []  # the secret never left the controller
    assert answer["detail"].startswith(f"inventory_url 'http://…@127.0.0.1:{port}'")


def test_an_inventory_that_lists_a_management_url_with_credentials_imports_nothing(api):
    items = [{"serial": f"INV-{i}", "name": f"inv-{i}", "model": "FTD 1010", "ip_address": "", "fqdn": "",
              "management_url": f"http://127.0.0.1:8400/api/devices/INV-{i}"} for i in range(3)]
    items[2]["management_url"] = f"http://admin:{SECRET}@127.0.0.1:8400/api/devices/INV-2"
    with inventory(items) as server, capture_logs() as logs:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        answer = problem(api.post(f"{DEVICES}/import", {"inventory_url": url}), 502, "inventory_invalid")
    assert "device 'INV-2': management_url 'http://…@127.0.0.1:8400/api/devices/INV-2'" in answer["detail"]
    assert SECRET not in json.dumps(answer) and SECRET not in json.dumps(logs, default=str)
    assert api.ok("GET", DEVICES)["total"] == 0
