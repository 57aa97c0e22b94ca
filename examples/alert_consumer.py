"""A consumer of certfleet's alert stream: a Redis consumer group, at least once. Copy and adapt.

    REDIS_URL=redis://127.0.0.1:6379/0 STREAM=certfleet:alerts python alert_consumer.py [GROUP] [CONSUMER]

Needs only redis-py. Each entry is {"event": <CloudEvent JSON>}. The group is made at the
stream's start (the history still in the stream is read once); give each process of a group its
own CONSUMER name and keep it across restarts. An entry is acknowledged after it was handled, so
a consumer that dies handles it again when it comes back, or another consumer of the group
claims it after a minute: drop repeats by the CloudEvent's id.
"""

from __future__ import annotations

import json
import os
import socket
import sys

import redis

CLAIM_IDLE_MS = 60_000


def handle(event: dict) -> None:
    """Your work here (page someone, open a ticket); it must be done before the entry is acknowledged."""
    alert = event["data"]
    subject = "/".join(p for p in (alert["device_name"], alert["trustpoint_name"]) if p) or alert["resource"]
    print(event["time"], event["type"].rsplit(".", 1)[-1], alert["code"], alert["severity"], subject,
          alert["description"], flush=True)


def main() -> None:
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), decode_responses=True)
    stream = os.environ.get("STREAM", "certfleet:alerts")
    group = sys.argv[1] if len(sys.argv) > 1 else "alert-consumer"
    consumer = sys.argv[2] if len(sys.argv) > 2 else socket.gethostname()
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # else the group exists and goes on where it was
            raise
    seen: set[str] = set()  # in real life: bounded, or a table with a unique key
    start = "0"  # first the entries we were given before and never acknowledged, then new ones (">")
    while True:
        # Entries another consumer of the group was given and has held for a minute: it died.
        entries = client.xautoclaim(stream, group, consumer, CLAIM_IDLE_MS, count=100)[1]
        reply = client.xreadgroup(group, consumer, {stream: start}, count=100, block=5000)
        mine = reply[0][1] if reply else []
        if start == "0" and not mine:
            start = ">"
        for entry_id, fields in entries + mine:
            if fields:  # empty when the entry was trimmed from the stream before we got to it
                event = json.loads(fields["event"])
                if event["id"] not in seen:
                    seen.add(event["id"])
                    handle(event)
            client.xack(stream, group, entry_id)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
