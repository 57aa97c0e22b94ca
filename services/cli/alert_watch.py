"""``certfleet alerts watch``: the reference consumer of the alert stream.

    certfleet alerts watch [--group NAME] [--consumer NAME] [--json] [--from-start]
                           [--claim-idle-seconds N] [--count N]

It reads the Redis stream (``CERTFLEET_ALERT_STREAM_KEY`` in ``CERTFLEET_BROKER_URL``) as one
consumer of a consumer group, so several watchers of one group share the events and a watcher
started again goes on where it stopped:

- the group is made on first use (``--from-start``: at the stream's start, so the history still
  in the stream is read; else at its end);
- first the entries this consumer was given and did not acknowledge (it was killed) are read
  again; then new ones; and every few seconds the entries another consumer of the group was given
  and has left unacknowledged for ``--claim-idle-seconds`` are claimed (that consumer died);
- an entry is acknowledged after its line is printed and flushed: at least once. An event seen
  before in this run (by its CloudEvent id) is acknowledged without printing it again.

One line per event: time, change, code, severity, device/trustpoint (or resource), description;
``--json``: the CloudEvent, one per line. SIGTERM stops it after the current event (exit 0),
Ctrl-C too (exit 130).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from typing import TextIO

from services.cli.errors import CliError, UsageError

DEFAULT_GROUP = "certfleet-watch"
#: Entries read per call, and how long a read waits for new ones (ms): a stop is noticed that soon.
BATCH = 100
BLOCK_MS = 1000
#: CloudEvent ids remembered to skip a repeat.
REMEMBERED = 10_000
FIELD = "event"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group", default=DEFAULT_GROUP,
                        help=f"consumer group: watchers of one group share the events (default {DEFAULT_GROUP})")
    parser.add_argument("--consumer", default=socket.gethostname(),
                        help="this watcher's name in the group; keep it across restarts (default: the host name)")
    parser.add_argument("--json", action="store_true", help="print each event's CloudEvent JSON, one per line")
    parser.add_argument("--from-start", action="store_true",
                        help="a new group starts at the stream's oldest entry (default: at its end)")
    parser.add_argument("--claim-idle-seconds", type=float, default=60.0, metavar="N",
                        help="take over entries another consumer has held unacknowledged this long (default 60)")
    parser.add_argument("--count", type=int, default=None, metavar="N", help="exit after N events")


def describe(event: dict) -> str:
    """One line for a person: time, change, code, severity, subject, description."""
    data = event.get("data") or {}
    change = str(event.get("type", "")).rsplit(".", 1)[-1]
    subject = "/".join(p for p in (data.get("device_name"), data.get("trustpoint_name")) if p) or data.get("resource")
    return "  ".join([str(event.get("time", "")), f"{change:<12}", f"{data.get('code', ''):<17}",
                      f"{data.get('severity', ''):<8}", subject or "-", str(data.get("description", ""))])


class Watcher:
    """A consumer of one group on the alert stream, printing to ``out``."""

    def __init__(self, client, *, key: str, group: str, consumer: str, claim_idle_seconds: float, as_json: bool,
                 out: TextIO, err: TextIO) -> None:
        self.client, self.key, self.group, self.consumer = client, key, group, consumer
        self.claim_idle_ms = max(1, int(claim_idle_seconds * 1000))
        self.as_json, self.out, self.err = as_json, out, err
        self.stop = threading.Event()
        self.printed = 0
        self._seen: OrderedDict[str, None] = OrderedDict()

    def ensure_group(self, *, from_start: bool) -> None:
        import redis

        try:
            self.client.xgroup_create(self.key, self.group, id="0" if from_start else "$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # the group exists: it goes on from where it is
                raise

    def run(self, *, count: int | None = None) -> None:
        """Print events until ``count`` were printed or :attr:`stop` is set."""
        self._limit = count
        self._drain_own()
        claim_every = min(5.0, max(0.5, self.claim_idle_ms / 2000))
        next_claim = time.monotonic()
        while not self._done():
            if time.monotonic() >= next_claim:
                self._claim_idle()
                next_claim = time.monotonic() + claim_every
                continue
            answer = self._read(">", block=min(BLOCK_MS, max(1, int(claim_every * 1000))))
            for _stream, entries in answer or []:
                self._handle(entries)

    # --- reading ---------------------------------------------------------------------------------

    def _read(self, start: str, *, block: int | None = None):
        import redis

        try:
            return self.client.xreadgroup(self.group, self.consumer, {self.key: start}, count=BATCH, block=block)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group(from_start=True)  # the stream was deleted: read whatever comes next
            return []

    def _drain_own(self) -> None:
        """The entries given to this consumer before and never acknowledged (it was stopped or killed)."""
        while not self._done():
            answer = self._read("0")
            entries = answer[0][1] if answer else []
            if not entries:
                return
            self._handle(entries)

    def _claim_idle(self) -> None:
        """Take over the entries other consumers of the group hold and have left idle."""
        start = "0-0"
        while not self._done():
            answer = self.client.xautoclaim(self.key, self.group, self.consumer, self.claim_idle_ms,
                                            start_id=start, count=BATCH)
            start, entries = answer[0], answer[1]
            self._handle(entries)
            if start in ("0-0", b"0-0"):
                return

    # --- one entry -------------------------------------------------------------------------------

    def _done(self) -> bool:
        return self.stop.is_set() or (self._limit is not None and self.printed >= self._limit)

    def _handle(self, entries) -> None:
        for entry_id, fields in entries:
            if self._done():
                return
            self._show(entry_id, fields)
            self.client.xack(self.key, self.group, entry_id)

    def _show(self, entry_id, fields) -> None:
        if not fields:  # trimmed from the stream while it was pending: nothing left to show
            return
        raw = fields.get(FIELD) or fields.get(FIELD.encode())
        try:
            event = json.loads(raw)
            event_id = str(event["id"])
        except (TypeError, ValueError, KeyError):
            self.err.write(f"warning: stream entry {_text(entry_id)} is not an alert event; skipped\n")
            self.err.flush()
            return
        if event_id in self._seen:
            return
        self._seen[event_id] = None
        if len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False) if self.as_json else describe(event)
        self.out.write(line + "\n")  # one write: a line is printed whole or not at all
        self.out.flush()
        self.printed += 1


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _redacted(url: str) -> str:
    """The Redis URL without its password, for an error message."""
    head, sep, rest = url.partition("://")
    return f"{head}{sep}…@{rest.rsplit('@', 1)[1]}" if "@" in rest else url


def main(args: argparse.Namespace) -> int:
    import redis

    from shared.settings import Settings

    settings = Settings.from_env()
    if not settings.broker_url:
        raise UsageError("no_alert_stream", "the alert stream lives in Redis: set CERTFLEET_BROKER_URL (e.g. "
                                            "redis://127.0.0.1:6379/0) to the controller's; an installation without "
                                            "Redis sends alerts to webhooks only (certfleet webhooks add)")
    if args.count is not None and args.count < 1:
        raise UsageError("bad_count", "--count must be at least 1")
    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=10, socket_timeout=30)
    watcher = Watcher(client, key=settings.alert_stream_key, group=args.group, consumer=args.consumer,
                      claim_idle_seconds=args.claim_idle_seconds, as_json=args.json, out=sys.stdout, err=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: watcher.stop.set())
    try:
        watcher.ensure_group(from_start=args.from_start)
        print(f"watching {settings.alert_stream_key} as {args.consumer} of group {args.group}", file=sys.stderr,
              flush=True)
        watcher.run(count=args.count)
    except redis.ConnectionError as exc:
        raise CliError("redis_unreachable", f"cannot reach Redis at {_redacted(settings.broker_url)}: {exc}") from None
    except BrokenPipeError:  # the reader of our output went away (| head)
        return 0
    finally:
        client.close()
    return 0
