"""What the alert-delivery tests consume with and raise alerts with: a real loopback webhook
receiver (which checks every signature), one that accepts connections and never answers, a
prefixed key on the shared Redis database, and alerts raised through the store as checks do."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis
from sqlmodel import Session

from services.controller.alerts import store
from shared import alerts
from shared.alerts import AlertCondition
from shared.clock import utcnow
from shared.enums import AlertCode, Severity
from shared.models import Domain

#: Database 0 is shared: every key these tests make starts with KEY_PREFIX and is deleted by them.
STREAM_REDIS = "redis://127.0.0.1:6379/0"
KEY_PREFIX = "test-relay:"


@contextmanager
def stream_key() -> Iterator[str]:
    """A fresh stream key under the tests' prefix, deleted afterwards (with its consumer groups)."""
    key = f"{KEY_PREFIX}{uuid.uuid4()}"
    client = redis.Redis.from_url(STREAM_REDIS)
    try:
        yield key
    finally:
        client.delete(key)
        client.close()


def read_stream(key: str) -> list[dict]:
    """Every CloudEvent in the stream, in its order."""
    client = redis.Redis.from_url(STREAM_REDIS)
    try:
        return [json.loads(fields[b"event"]) for _id, fields in client.xrange(key)]
    finally:
        client.close()


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    verified: bool

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: ``answer(n)`` gives the status of the n-th request (from 1);
    it keeps every request it answered 2xx, and checks each one's signature with ``secret``."""

    secret: str
    answer: Callable[[int], int] = lambda _n: 204
    requests: int = 0
    got: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests += 1
                    status = receiver.answer(receiver.requests)
                    if 200 <= status < 300:
                        verified = alerts.verify(receiver.secret, timestamp=self.headers.get(alerts.TIMESTAMP_HEADER),
                                                 signature=self.headers.get(alerts.SIGNATURE_HEADER), body=body,
                                                 now=time.time())
                        receiver.got.append(Delivery(body, dict(self.headers), verified))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def event_ids(self) -> set[str]:
        with self.lock:
            return {d.event["id"] for d in self.got}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentReceiver:
    """Takes connections (the kernel completes them) and never answers a request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def stop(self) -> None:
        self.sock.close()


def add_domain(engine, name: str, parent: uuid.UUID) -> uuid.UUID:
    with Session(engine) as session:
        domain = Domain(name=name, parent_id=parent)
        session.add(domain)
        session.commit()
        return domain.id


def raise_alerts(engine, domain_id: uuid.UUID, count: int, *, code: AlertCode = AlertCode.KEYRING_EXPIRED,
                 severity: Severity | None = None, prefix: str = "fw") -> None:
    """``count`` new alerts of ``code`` in the domain, one per (made-up) device, each writing its
    ``raised`` event to the outbox in the same transaction, as the store does for a check."""
    with Session(engine) as session:
        for n in range(count):
            store.raise_alert(session, AlertCondition(
                code=code, description=alerts.keyring_description("expired"), domain_id=domain_id, severity=severity,
                device_id=uuid.uuid4(), device_name=f"{prefix}-{n}", trustpoint_name="default"), now=utcnow())
        session.commit()
