"""A receiver for certfleet's alert webhooks, Python's standard library only. Copy and adapt.

    WEBHOOK_SECRET='the secret given to certfleet webhooks add' python webhook_receiver.py [PORT]

Each delivery is a POST of one CloudEvent (Content-Type application/cloudevents+json) with

    Certfleet-Timestamp: 1924992000                     (Unix seconds, when it was sent)
    Certfleet-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
    Certfleet-Event-Id:  <the CloudEvent's id>

Check the signature over the raw body bytes before parsing them, refuse a timestamp more than
five minutes from your clock (a replay), and answer 2xx quickly: anything else, or no answer
within the webhook timeout, is a failed attempt that certfleet retries later. A retry, or a
delivery whose answer got lost, brings an event you already have: drop it by its id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 300


def verified(secret: bytes, timestamp: str, signature: str, body: bytes, now: float) -> bool:
    """True when ``signature`` is certfleet's for ``body`` sent at ``timestamp``, and that was recently."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    expected = "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    secret = b""
    seen: set[str] = set()  # in real life: bounded, or a table with a unique key
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not verified(self.secret, self.headers.get("Certfleet-Timestamp", ""),
                        self.headers.get("Certfleet-Signature", ""), body, time.time()):
            self.answer(401)
            return
        event = json.loads(body)
        with self.lock:  # requests are handled on several threads at once
            if event["id"] not in self.seen:
                self.seen.add(event["id"])
                alert = event["data"]
                print(event["time"], event["type"].rsplit(".", 1)[-1], alert["code"], alert["severity"],
                      alert["device_name"] or alert["resource"], alert["description"], flush=True)
        self.answer(204)

    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    Handler.secret = os.environ["WEBHOOK_SECRET"].encode()
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8088
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"listening on port {port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
