"""A device inventory that never ends is refused, not followed: endless pages, an endless or
oversized body and a server dripping its answer each end the import with their own code, and a
base URL that is not a plain http(s) base is refused before any request."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from services.controller.inventory import InventoryLimits, fetch_inventory
from shared.errors import ExchangeError, ValidationError
from tests.support.api import GLOBAL, problem


def device(i: int) -> dict:
    return {"serial": f"END-{i:06d}", "name": f"end-{i}", "model": "FTD 1010", "ip_address": "198.51.100.7",
            "fqdn": f"end-{i}.example.net", "management_url": f"http://127.0.0.1:8400/api/devices/END-{i:06d}"}


class BadInventory:
    """An inventory server on loopback that misbehaves one way (``mode``):

    - ``endless-pages``: every page holds one new device and claims a billion in all;
    - ``endless-body``: a chunked answer that never ends;
    - ``declared-huge``: says its answer is a gigabyte long (and sends a little of it);
    - ``drip``: a byte every 20 ms, never finishing.
    """

    def __init__(self, mode: str) -> None:
        outer, self.requests, self.stop = self, 0, threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's naming
                outer.requests += 1
                try:
                    getattr(self, mode.replace("-", "_"))()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up: what these servers are for

            def endless_pages(self):
                offset = int(parse_qs(urlsplit(self.path).query)["offset"][0])
                self.answer(json.dumps({"items": [device(offset)], "total": 10**9}).encode())

            def endless_body(self):
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b" " * 65536
                while not outer.stop.is_set():
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

            def declared_huge(self):
                self.send_response(200)
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                self.wfile.write(b'{"items": [')

            def drip(self):
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                while not outer.stop.wait(0.02):
                    self.wfile.write(b" ")
                    self.wfile.flush()

            def answer(self, payload: bytes):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> BadInventory:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def refused(url: str, limits: InventoryLimits) -> ExchangeError:
    with pytest.raises(ExchangeError) as caught:
        for _ in fetch_inventory(url, limits=limits):
            pass
    assert url in caught.value.message
    return caught.value


def test_endless_pages_stop_at_the_page_limit():
    with BadInventory("endless-pages") as inventory:
        error = refused(inventory.url, InventoryLimits(max_pages=5))
        assert error.code == "inventory_too_many_pages" and "more than 5 pages" in error.message
        assert inventory.requests == 5


def test_an_endless_body_stops_at_the_byte_limit():
    with BadInventory("endless-body") as inventory:
        started = time.monotonic()
        error = refused(inventory.url, InventoryLimits(max_bytes=1 << 20))
        assert error.code == "inventory_too_large" and "1048576 bytes" in error.message
        assert time.monotonic() - started < 10


def test_a_body_declared_too_large_is_not_read():
    with BadInventory("declared-huge") as inventory:
        assert refused(inventory.url, InventoryLimits()).code == "inventory_too_large"


def test_a_dripping_server_is_cut_off_at_the_deadline():
    with BadInventory("drip") as inventory:
        started = time.monotonic()
        error = refused(inventory.url, InventoryLimits(deadline_seconds=0.3, timeout_seconds=5))
        assert error.code == "inventory_timeout" and "longer than 0.3 s" in error.message
        assert time.monotonic() - started < 5  # not the drip's 2,000 s, nor one read's 5 s


def test_the_deadline_counts_on_the_injected_clock():
    now = [0.0]

    def clock() -> float:  # every look at the time costs a minute
        now[0] += 60
        return now[0]

    with BadInventory("endless-pages") as inventory:
        with pytest.raises(ExchangeError) as caught:
            for _ in fetch_inventory(inventory.url, limits=InventoryLimits(deadline_seconds=300), clock=clock):
                pass
        assert caught.value.code == "inventory_timeout" and "longer than 300 s" in caught.value.message
        assert inventory.requests < 5  # five minutes of pages on this clock: far fewer than the page limit


@pytest.mark.parametrize(("url", "code"), [
    ("http://127.0.0.1:9/?token=x", "invalid_url"),
    ("http://127.0.0.1:9/inventory#top", "invalid_url"),
    ("http://127.0.0.1:9/?", "invalid_url"),
    ("ftp://127.0.0.1:9/", "invalid_url"),
    ("http://admin:secret@127.0.0.1:9/", "url_credentials_not_allowed"),
])
def test_a_base_url_that_is_not_a_plain_http_base_is_refused_before_any_request(url, code):
    with pytest.raises(ValidationError) as caught:
        next(fetch_inventory(url))
    assert caught.value.code == code


def test_the_api_answers_the_limits_with_their_codes(api):
    path = f"/domains/{GLOBAL}/devices/import"
    with BadInventory("declared-huge") as inventory:
        body = problem(api.post(path, {"inventory_url": inventory.url}), 502, "inventory_too_large")
        assert inventory.url in body["detail"]
    with BadInventory("endless-pages") as inventory:
        body = problem(api.post(path, {"inventory_url": inventory.url + "/?offset=0"}), 422, "invalid_url")
        assert "query or fragment" in body["detail"] and inventory.requests == 0
    assert api.ok("GET", f"/domains/{GLOBAL}/devices")["total"] == 0


def test_the_limits_are_the_installations_settings(db_engine, stub_broker):
    from dataclasses import replace

    from tests.support.api import make_settings, start_api

    settings = replace(make_settings(db_engine), inventory_max_pages=3)
    client, tokens = start_api(db_engine, stub_broker, settings)
    with client, BadInventory("endless-pages") as inventory:
        answer = client.post(f"/api/v1/domains/{GLOBAL}/devices/import", json={"inventory_url": inventory.url},
                             headers={"Authorization": f"Bearer {tokens['admin']}"})
        body = problem(answer, 502, "inventory_too_many_pages")
        assert "more than 3 pages" in body["detail"] and inventory.requests == 3
