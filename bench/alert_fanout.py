"""Alert fan-out benchmark: how long 2,500 alerts raised at once take to reach a stream consumer
and a webhook.

The alerts are raised through ``store.sync`` in one transaction (as a health check raising F0853
for 2,500 devices would); then the alert relay starts (its own loop, default interval) with one
real HTTP webhook receiver on 127.0.0.1 (it checks every signature), and ``certfleet alerts watch
--json`` reads the stream as a consumer group in its own process. Prints one JSON line: the
seconds from the relay's start until the consumer and the webhook have every alert. The target:
both in under 10 s.

    .venv/bin/python bench/alert_fanout.py                        # PostgreSQL, 2,500 alerts
    .venv/bin/python bench/alert_fanout.py --database sqlite --alerts 5000

Redis: ``--redis`` (default database 0 on 127.0.0.1), the stream under ``--key-prefix``, deleted
afterwards. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlmodel import Session  # noqa: E402

from bench.stopping import stoppable  # noqa: E402
from services.controller.alerts import store  # noqa: E402
from services.controller.alerts.relay import AlertRelay  # noqa: E402
from shared import alerts  # noqa: E402
from shared.alerts import AlertCondition  # noqa: E402
from shared.clock import utcnow  # noqa: E402
from shared.db import init_db, make_engine  # noqa: E402
from shared.enums import AlertCode  # noqa: E402
from shared.models import GLOBAL_DOMAIN_ID, Webhook  # noqa: E402
from shared.secrets import SecretBox  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.support.pg import fresh_database  # noqa: E402

SECRET = "bench-webhook-secret-0123456789"
SECRET_KEY = "bench-secret-key"
TARGET_SECONDS = 10.0


class Receiver:
    """The webhook: records each CloudEvent id it got (and when it had them all), checking signatures."""

    def __init__(self, expected: int) -> None:
        self.expected, self.ids, self.bad = expected, set(), 0
        self.lock, self.complete = threading.Lock(), threading.Event()
        self.completed_at = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                good = alerts.verify(SECRET, timestamp=self.headers.get(alerts.TIMESTAMP_HEADER),
                                     signature=self.headers.get(alerts.SIGNATURE_HEADER), body=body, now=time.time())
                with receiver.lock:
                    receiver.bad += not good
                    receiver.ids.add(self.headers.get(alerts.EVENT_ID_HEADER))
                    if len(receiver.ids) >= receiver.expected and not receiver.complete.is_set():
                        receiver.completed_at = time.perf_counter()
                        receiver.complete.set()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def raise_alerts(engine, count: int) -> None:
    conditions = [AlertCondition(code=AlertCode.KEYRING_EXPIRED, description=alerts.keyring_description("expired"),
                                 domain_id=GLOBAL_DOMAIN_ID, device_id=uuid.uuid4(), device_name=f"fw-{n}",
                                 trustpoint_name="default") for n in range(count)]
    with Session(engine) as session:
        result = store.sync(session, conditions, codes=[AlertCode.KEYRING_EXPIRED], now=utcnow())
        session.commit()
    assert result.raised == count, result.describe()


def run(database_url: str, *, alerts_count: int, redis_url: str, key: str) -> dict:
    settings = Settings(database_url=database_url, broker_url=redis_url, alert_stream_key=key, secret_key=SECRET_KEY)
    engine = make_engine(settings)
    init_db(engine)
    with ExitStack() as cleanup:
        cleanup.callback(engine.dispose)
        receiver = Receiver(alerts_count)
        cleanup.callback(receiver.stop)
        with Session(engine) as session:
            session.add(Webhook(domain_id=GLOBAL_DOMAIN_ID, name="bench", url=receiver.url,
                                secret_blob=SecretBox(SECRET_KEY).seal(SECRET.encode())))
            session.commit()
        env = {**os.environ, "CERTFLEET_BROKER_URL": redis_url, "CERTFLEET_ALERT_STREAM_KEY": key,
               "PYTHONPATH": str(ROOT)}
        logs = cleanup.enter_context(tempfile.TemporaryFile())
        consumer = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "alerts", "watch", "--json", "--from-start", "--group", "bench",
             "--count", str(alerts_count)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=logs)
        cleanup.callback(lambda: consumer.poll() is None and consumer.kill())
        consumed, consumer_done = [], threading.Event()
        consumed_at = [0.0]

        def read() -> None:
            for line in consumer.stdout:
                consumed.append(json.loads(line)["id"])
                if len(consumed) >= alerts_count:
                    consumed_at[0] = time.perf_counter()
                    consumer_done.set()

        threading.Thread(target=read, daemon=True).start()
        client = redis.Redis.from_url(redis_url)
        cleanup.callback(client.close)
        deadline = time.monotonic() + 30
        while not client.exists(key):  # the watcher made its group (and the stream) at its start
            if consumer.poll() is not None or time.monotonic() > deadline:
                logs.seek(0)
                raise RuntimeError(f"certfleet alerts watch did not start: {logs.read().decode()[-2000:]}")
            time.sleep(0.05)

        raise_alerts(engine, alerts_count)
        relay = AlertRelay(engine, settings)
        started = time.perf_counter()
        relay.start()
        cleanup.callback(relay.stop)
        consumer_done.wait(120)
        receiver.complete.wait(120)
        to_consumer = consumed_at[0] - started if consumer_done.is_set() else None
        to_webhook = receiver.completed_at - started if receiver.complete.is_set() else None
    both = max(to_consumer or float("inf"), to_webhook or float("inf"))
    return {
        "benchmark": "alert_fanout",
        "database": database_url.split(":", 1)[0],
        "alerts": alerts_count,
        "stream_consumer_seconds": round(to_consumer, 3) if to_consumer is not None else None,
        "webhook_seconds": round(to_webhook, 3) if to_webhook is not None else None,
        "consumer_events": len(set(consumed)),
        "webhook_events": len(receiver.ids),
        "bad_signatures": receiver.bad,
        "target_met": both < TARGET_SECONDS and receiver.bad == 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=2500, help="alerts raised at once (default 2500)")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL of the alert stream")
    parser.add_argument("--key-prefix", default="certfleet-bench:", help="the stream's key prefix")
    args = parser.parse_args()
    key = f"{args.key_prefix}alert-fanout:{uuid.uuid4()}"
    try:
        if args.database == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                result = run(f"sqlite:///{tmp}/bench.db", alerts_count=args.alerts, redis_url=args.redis, key=key)
        else:
            with fresh_database() as url:
                result = run(url, alerts_count=args.alerts, redis_url=args.redis, key=key)
    finally:
        client = redis.Redis.from_url(args.redis)
        client.delete(key)
        client.close()
    print(json.dumps(result), flush=True)
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(stoppable(main))
