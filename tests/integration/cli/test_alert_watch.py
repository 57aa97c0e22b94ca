"""``certfleet alerts watch`` and the sample consumer (examples/alert_consumer.py) against real Redis
(database 0, a prefixed stream key) fed by the alert relay, as separate processes: a watcher killed
with SIGKILL mid-way, started again (or replaced by another consumer of its group that claims what
it held), misses no event."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from services.cli.main import main
from services.controller.alerts.relay import AlertRelay
from shared.models import GLOBAL_DOMAIN_ID
from shared.settings import Settings
from tests.support.alert_consumers import STREAM_REDIS, raise_alerts, read_stream, stream_key
from tests.support.procs import ROOT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis

EVENTS = 400


@pytest.fixture
def stream(sqlite_engine) -> Iterator[tuple[str, set[str]]]:
    """A stream holding EVENTS alert events, put there by the relay; and their CloudEvent ids."""
    with stream_key() as key:
        settings = Settings(database_url=str(sqlite_engine.url), broker_url=STREAM_REDIS, alert_stream_key=key)
        raise_alerts(sqlite_engine, GLOBAL_DOMAIN_ID, EVENTS)
        relay = AlertRelay(sqlite_engine, settings)
        try:
            assert relay.run_once().relayed == EVENTS
        finally:
            relay.stop()
        yield key, {e["id"] for e in read_stream(key)}


def watch(key: str, *args: str, stdout) -> subprocess.Popen:
    env = {**os.environ, "CERTFLEET_BROKER_URL": STREAM_REDIS, "CERTFLEET_ALERT_STREAM_KEY": key}
    return subprocess.Popen([sys.executable, "-m", "services.cli", "alerts", "watch", "--json", "--group", "g",
                             *args], cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE)


def killed_mid_way(key: str, consumer: str) -> set[str]:
    """A watcher whose output nobody reads: it blocks writing once the pipe is full, holding a
    batch it was given and has not acknowledged. It is killed there; the ids it printed."""
    proc = watch(key, "--consumer", consumer, "--from-start", stdout=subprocess.PIPE)
    try:
        wait_until(lambda: pending(key) > 0, what="entries handed to the watcher")
        time.sleep(0.5)  # let it fill the pipe and block
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    lines = complete_lines(out.decode())
    assert 0 < len(lines) < EVENTS
    return {json.loads(line)["id"] for line in lines}


def pending(key: str, group: str = "g") -> int:
    """Entries of ``group`` handed to a consumer and not acknowledged (0 before the group exists)."""
    client = redis.Redis.from_url(STREAM_REDIS)
    try:
        return client.xpending(key, group)["pending"]
    except redis.ResponseError:  # NOGROUP
        return 0
    finally:
        client.close()


def complete_lines(text: str) -> list[str]:
    """The lines a writer has finished: one killed, or still writing, may have left half of its last."""
    return text.split("\n")[:-1]


def printed(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in complete_lines(path.read_text()) if line.startswith("{")]


def stopped_with_sigterm(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, proc.stderr.read().decode()


def test_a_watcher_killed_mid_way_and_started_again_misses_nothing(stream, tmp_path):
    key, ids = stream
    first = killed_mid_way(key, "c1")
    out = tmp_path / "second.out"
    with out.open("w") as sink:
        second = watch(key, "--consumer", "c1", stdout=sink)
        wait_until(lambda: first | set(printed(out)) == ids, what="every event across both runs")
        stopped_with_sigterm(second)
    again = printed(out)
    assert len(again) == len(set(again))  # each once in a run
    assert ids - first <= set(again)


def test_another_consumer_claims_what_a_dead_one_held(stream, tmp_path):
    key, ids = stream
    first = killed_mid_way(key, "c1")
    held = pending(key)
    assert held > 0  # given to c1, never acknowledged: only a claim brings them back
    out = tmp_path / "claimer.out"
    with out.open("w") as sink:
        claimer = watch(key, "--consumer", "c2", "--claim-idle-seconds", "0.5", stdout=sink)
        wait_until(lambda: first | set(printed(out)) == ids, what="every event across both consumers")
        wait_until(lambda: pending(key) == 0, what="every entry acknowledged")
        stopped_with_sigterm(claimer)


def test_watch_needs_redis(monkeypatch, capsys):
    monkeypatch.setenv("CERTFLEET_BROKER_URL", "")
    assert main(["alerts", "watch"]) == 2
    assert capsys.readouterr().err.startswith("error: no_alert_stream: the alert stream lives in Redis")


def test_watch_prints_a_line_per_event_for_people(stream, monkeypatch, capsys):
    key, ids = stream
    monkeypatch.setenv("CERTFLEET_BROKER_URL", STREAM_REDIS)
    monkeypatch.setenv("CERTFLEET_ALERT_STREAM_KEY", key)
    assert main(["alerts", "watch", "--from-start", "--group", "people", "--count", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "raised" in lines[0] and "F0853" in lines[0] and "major" in lines[0] and "fw-0/default" in lines[0]
    assert lines[0].endswith("default Keyring's certificate is invalid, reason: expired")


def test_the_sample_consumer_reads_every_event_once_and_acknowledges_it(stream, tmp_path):
    key, ids = stream
    out = tmp_path / "sample.out"
    env = {**os.environ, "REDIS_URL": STREAM_REDIS, "STREAM": key}
    with out.open("w") as sink:
        sample = subprocess.Popen([sys.executable, str(ROOT / "examples" / "alert_consumer.py"), "sample", "s1"],
                                  env=env, stdout=sink, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: len(out.read_text().splitlines()) >= EVENTS, what="every event at the sample")
            wait_until(lambda: pending(key, "sample") == 0, what="every entry acknowledged")
        finally:
            sample.kill()
            sample.wait(10)
    lines = out.read_text().splitlines()
    assert len(lines) == EVENTS
    assert lines[0].split()[1:5] == ["raised", "F0853", "major", "fw-0/default"]
