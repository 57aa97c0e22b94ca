"""Health alerts end to end, on the multi-process stack (PostgreSQL, Redis; the controller with its
scheduler and alert relay, a worker process, the device simulator with 800 devices of which 5%
have an expired default keyring), with the consumers a user runs: ``certfleet alerts watch`` in
its own process (a consumer group on the alert stream) and a real HTTP webhook receiver.

- the health check finds every expired keyring, and only those: one open F0853 per such device,
  with the seed's description;
- the consumer, killed with SIGKILL mid-way and started again, and the webhook receiver, which
  answers 500 for its first 20 seconds, each end up with every raised alert, and every webhook
  delivery carries a signature that verifies;
- ``certfleet system support regenerate-security-keyring default --all-expired`` clears every
  F0853, and both consumers get the cleared events.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import redis

from services.cli.api_client import CertfleetClient
from shared import alerts
from shared.domains import GLOBAL_DOMAIN_ID
from tests.support.pg import fresh_database, postgres_or_skip
from tests.support.procs import ROOT, Proc, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

#: Database 0 is shared with other tests' prefixed keys: everything here lives under NAMESPACE.
REDIS_URL = "redis://127.0.0.1:6379/0"
NAMESPACE = "e2e-health-alerts"
STREAM = f"{NAMESPACE}:stream"
DEVICES = 800
EXPIRED_SHARE = 0.05
WEBHOOK_SECRET = "e2e-webhook-secret-0123456789"
RECEIVER_DOWN_SECONDS = 20.0
GLOBAL = str(GLOBAL_DOMAIN_ID)
F0853_TEXT = "default Keyring's certificate is invalid, reason: expired"


@dataclass
class Receiver:
    """What the webhook receiver got: every delivery, whether its signature verified, and how many
    it refused while it was "down": for ``down_seconds`` from the first delivery it was sent."""

    url: str = ""
    down_seconds: float = 0.0
    down_until: float | None = None
    refused: int = 0
    events: list[dict] = field(default_factory=list)
    bad_signatures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    if receiver.down_until is None:
                        receiver.down_until = time.monotonic() + receiver.down_seconds
                    if time.monotonic() < receiver.down_until:
                        receiver.refused += 1
                        status = 500
                    else:
                        status = 204
                        event = json.loads(body)
                        receiver.events.append(event)
                        if not alerts.verify(WEBHOOK_SECRET, timestamp=self.headers.get(alerts.TIMESTAMP_HEADER),
                                             signature=self.headers.get(alerts.SIGNATURE_HEADER), body=body,
                                             now=time.time()):
                            receiver.bad_signatures.append(event["id"])
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        return Handler

    def of_type(self, change: str) -> dict[str, dict]:
        """The alerts (by id) whose ``change`` event arrived, each once however often it came."""
        with self.lock:
            return {e["data"]["id"]: e["data"] for e in self.events if e["type"] == alerts.event_type(change)}


@dataclass
class Bed:
    stack: Stack
    client: CertfleetClient
    receiver: Receiver
    procs: list[Proc]
    tmp: object

    def certfleet(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli", *args, "--api-url", self.stack.api_url,
                               "--token", self.stack.token], cwd=ROOT, env=self.stack.env, capture_output=True,
                              text=True, timeout=120)

    def consumer(self, name: str) -> Proc:
        proc = Proc(name, ["alerts", "watch", "--json", "--group", "e2e", "--consumer", "c1", "--from-start",
                           "--claim-idle-seconds", "1"], self.stack.env, self.tmp)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-2000:]}" for p in self.procs + self.stack.procs)


def consumed(*procs: Proc, change: str) -> dict[str, dict]:
    """The alerts (by id) whose ``change`` event the consumer processes printed."""
    seen = {}
    for proc in procs:
        for line in proc.output().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event["type"] == alerts.event_type(change):
                    seen[event["data"]["id"]] = event["data"]
    return seen


def wait_for(condition, *, timeout: float, what: str, bed: Bed):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} not reached within {timeout} s\n{bed.logs()}")


def expired_serials(sim_url: str) -> set[str]:
    """The truth, from the devices themselves: whose default keyring is invalid."""
    with httpx.Client(base_url=sim_url, timeout=10) as http:
        serials = [d["serial"] for d in http.get("/api/inventory", params={"limit": DEVICES}).json()["items"]]
        return {s for s in serials if not http.get(f"/api/devices/{s}/keyring/default").json()["valid"]}


def cleanup_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{NAMESPACE}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[Bed]:
    postgres_or_skip()
    tmp = tmp_path_factory.mktemp("health-alerts")
    cleanup_redis()
    with ExitStack() as cleanup:
        cleanup.callback(cleanup_redis)
        receiver = Receiver()
        server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.handler())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        cleanup.callback(server.shutdown)
        database_url = cleanup.enter_context(fresh_database())
        env = {"CERTFLEET_BROKER_NAMESPACE": NAMESPACE, "CERTFLEET_ALERT_STREAM_KEY": STREAM,
               "CERTFLEET_HEALTH_CHECK_SECONDS": "3600", "CERTFLEET_ALERT_CONDITIONS_SECONDS": "1",
               "CERTFLEET_SCHEDULER_TICK_SECONDS": "0.5", "CERTFLEET_WEBHOOK_BACKOFF_SECONDS": "0.5",
               "CERTFLEET_WEBHOOK_BACKOFF_MAX_SECONDS": "2", "CERTFLEET_WEBHOOK_MAX_ATTEMPTS": "100"}
        stack = Stack(database_url=database_url, broker_url=REDIS_URL, log_dir=tmp, devices=DEVICES, workers=1,
                      sim_args=["--expired-keyrings", str(EXPIRED_SHARE)], extra_env=env)
        procs: list[Proc] = []
        cleanup.callback(lambda: [p.stop() for p in procs])
        cleanup.enter_context(stack)
        client = cleanup.enter_context(CertfleetClient(stack.api_url, stack.token))
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
        yield Bed(stack=stack, client=client, receiver=receiver, procs=procs, tmp=tmp)


def test_every_expired_keyring_raises_one_f0853_and_every_consumer_gets_it_raised_and_cleared(bed: Bed):
    client, receiver = bed.client, bed.receiver
    webhook = client.create_webhook(name="e2e receiver", url=receiver.url, codes=["F0853"], secret=WEBHOOK_SECRET,
                                    domain_id=GLOBAL)
    assert WEBHOOK_SECRET not in json.dumps(webhook)
    receiver.down_seconds = RECEIVER_DOWN_SECONDS
    first = bed.consumer("watch-1")

    assert client.import_devices(bed.stack.sim_url)["imported"] == DEVICES
    expired = expired_serials(bed.stack.sim_url)
    assert 0.02 * DEVICES < len(expired) < 0.08 * DEVICES
    devices = {d["serial"]: d for d in client.devices(domain_id=GLOBAL)}
    expected_ids = {devices[s]["id"] for s in expired}

    client.run_schedule("device-health")

    # The consumer is killed mid-way through the raised alerts, and started again.
    wait_for(lambda: len(consumed(first, change="raised")) >= len(expired) // 4, timeout=60,
             what="a quarter of the alerts at the first consumer", bed=bed)
    first.kill(signal.SIGKILL)
    first.stop()
    second = bed.consumer("watch-2")

    def open_f0853() -> list[dict]:
        return list(client._pages(f"/domains/{GLOBAL}/alerts", code="F0853", state="open"))

    wait_for(lambda: len(open_f0853()) == len(expired), timeout=60, what="an F0853 per expired keyring", bed=bed)
    raised = open_f0853()
    assert {a["device_id"] for a in raised} == expected_ids
    assert len({a["device_id"] for a in raised}) == len(raised)  # exactly one per device
    assert {a["description"] for a in raised} == {F0853_TEXT}
    raised_ids = {a["id"] for a in raised}

    wait_for(lambda: raised_ids <= consumed(first, second, change="raised").keys(), timeout=60,
             what="every raised alert at the restarted consumer", bed=bed)
    wait_for(lambda: raised_ids <= receiver.of_type("raised").keys(), timeout=RECEIVER_DOWN_SECONDS + 60,
             what="every raised alert at the webhook receiver", bed=bed)
    assert receiver.refused > 0, "the receiver was never asked while it was down"
    assert receiver.bad_signatures == []

    # The health check again: the same conditions, no second alert.
    client.run_schedule("device-health")
    time.sleep(3)
    assert {a["id"] for a in open_f0853()} == raised_ids

    done = bed.certfleet("system", "support", "regenerate-security-keyring", "default", "--all-expired")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: not open_f0853(), timeout=60, what="every F0853 cleared", bed=bed)
    wait_for(lambda: raised_ids <= consumed(first, second, change="cleared").keys(), timeout=60,
             what="every cleared event at the consumer", bed=bed)
    wait_for(lambda: raised_ids <= receiver.of_type("cleared").keys(), timeout=60,
             what="every cleared event at the webhook receiver", bed=bed)
    assert expired_serials(bed.stack.sim_url) == set()
    assert receiver.bad_signatures == []
