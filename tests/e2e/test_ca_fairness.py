"""Fair to the CA, end to end: ``certfleet ca serve``, the controller, two worker processes and
the device simulator as separate processes (PostgreSQL, Redis), devices enrolling over EST.

- an enrollment object's CA limits hold across both worker processes: never more enrollments
  at the CA at once than its concurrency limit, never faster than its rate;
- the CA going away mid-batch does not make thousands of retries: the jobs wait (attempts
  untouched) and probe it now and then; when it comes back, the batch completes.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.support.batch_checks import FAIRNESS_REDIS_URL as REDIS_URL
from tests.support.batch_checks import World, check_nothing_lost, fault_world, poll, wait_for
from tests.support.procs import Proc, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

USER, PASSWORD = "ftd-enroller", "Fair-To-The-Ca-42"


class Ca:
    """``certfleet ca serve`` on a fixed port, so it can be stopped and started again as itself."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir, self.logs = tmp_path / "ca", tmp_path
        self.port = free_port()
        self.proc: Proc | None = None
        self.runs = 0

    def start(self) -> Ca:
        self.runs += 1
        env = {**os.environ, "CERTFLEET_CA_EST_PASSWORD": PASSWORD, "CERTFLEET_LOG_LEVEL": "WARNING"}
        self.proc = Proc(f"ca-{self.runs}", ["ca", "serve", "--state-dir", str(self.dir), "--est-port",
                                             str(self.port), "--est-user", USER], env, self.logs)
        try:
            self.proc.wait_for_line(r"ca ready:")
        except BaseException:  # a CA that did not come up is not left running
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"


@pytest.fixture
def ca(tmp_path):
    ca = Ca(tmp_path).start()
    yield ca
    ca.stop()


def est_batch(world: World, ca: Ca, **limits) -> dict:
    obj = world.client.create_enrollment_object(
        name="vpn-est", enrollment_type="est", enrollment_url=ca.url, username=USER, password=PASSWORD,
        key_type="ecdsa", key_size=256, organization="Example Corp", **limits)
    assert {k: obj[k] for k in limits} == limits
    return world.client.start_bulk_enrollment(obj["id"], selection={"all": True})


def step_times(world: World) -> list[dict[str, datetime]]:
    """Per job, when each of its steps happened (the last time, for repeated steps)."""
    with world.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT steps FROM job")).scalars().all()
    return [{s["step"]: datetime.fromisoformat(s["at"]) for s in steps} for steps in rows]


def sim_requests(world: World, kind: str) -> int:
    return httpx.get(f"{world.stack.sim_url}/api/stats").json()["requests"].get(kind, 0)


def test_an_objects_ca_limits_hold_across_worker_processes(tmp_path, ca):
    devices, concurrency, rate = 60, 3, 30.0
    sim_args = ["--latency-ms", "20", "--trust-anchor", str(ca.dir / "tls-ca.pem")]
    with fault_world(tmp_path, devices=devices, sim_args=sim_args, redis_url=REDIS_URL) as world:
        batch = est_batch(world, ca, ca_concurrency_limit=concurrency, ca_rate_limit=rate)
        final = wait_for(world, batch, timeout=120)
        assert (final["succeeded"], final["failed"]) == (devices, 0), final
        check_nothing_lost(world, total=devices)
        jobs = step_times(world)
    # While a job holds a permit it configures the device and has it enroll with the CA.
    spans = sorted((j["configured"], j["enroll"]) for j in jobs)
    at_once = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert at_once <= concurrency, at_once
    # Starts: evenly spaced at the rate (a tenth of a second's burst).
    starts = sorted(s for s, _ in spans)
    seconds = (starts[-1] - starts[0]).total_seconds()
    assert seconds >= (devices - rate) / rate * 0.9, seconds
    later = [s for s in starts if (s - starts[0]).total_seconds() >= 1.5]
    per_window = max(sum(1 for t in later if 0 <= (t - first).total_seconds() < 1) for first in later)
    assert per_window <= rate * 1.1 + 3, per_window


def test_a_ca_outage_mid_batch_is_waited_out_without_a_storm_of_retries(tmp_path, ca):
    devices = 200
    sim_args = ["--latency-ms", "5", "--trust-anchor", str(ca.dir / "tls-ca.pem")]
    env = {"CERTFLEET_CA_BACKOFF_MAX_MS": "2000", "CERTFLEET_RETRY_BACKOFF_MS": "200"}
    with fault_world(tmp_path, devices=devices, sim_args=sim_args, env=env, redis_url=REDIS_URL) as world:
        batch = est_batch(world, ca)
        wait_for(world, batch, done=50)
        ca.stop()
        # The jobs left when the CA went away (the batch goes on while the poll above answers).
        stopped_at = poll(world, batch)
        left = devices - stopped_at["succeeded"] - stopped_at["failed"]
        assert left >= 50, stopped_at
        before = sim_requests(world, "enroll")
        time.sleep(4)
        during = sim_requests(world, "enroll") - before
        ca.start()
        final = wait_for(world, batch, timeout=120)
        assert (final["succeeded"], final["failed"]) == (devices, 0), final["failures"]
        check_nothing_lost(world, total=devices)
        with world.engine.connect() as conn:
            waited, max_attempts_used, waits, attempts_of_waiters = conn.execute(sa.text(
                "SELECT count(*) FILTER (WHERE ca_waits > 0), max(attempts), sum(ca_waits), "
                "sum(attempts) FILTER (WHERE ca_waits > 0) FROM job")).one()
    # Scores of jobs were due while the CA was away; only a handful asked a device to try it.
    assert during < 40, during
    assert waited > left / 2, (waited, left)  # most of them waited for the CA ...
    assert max_attempts_used <= 5  # ... without spending their attempts:
    # a wait gives its attempt back, so the jobs that waited used fewer attempts than they waited.
    assert attempts_of_waiters < waits, (attempts_of_waiters, waits)
