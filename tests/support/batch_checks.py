"""What the fault tests share: a multi-process stack on its own PostgreSQL database and Redis
db, a bulk enrollment started and followed through the API, killing a process tree, and the
checks that nothing was lost or issued twice, read straight from the database."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa

from services.cli.api_client import ApiError, CertfleetClient
from tests.support.pg import fresh_database, postgres_or_skip
from tests.support.procs import Stack

#: The fault tests' own Redis database: they flush it (FLUSHDB, never FLUSHALL). The CA fairness
#: tests have theirs, so the two files can run at the same time.
REDIS_URL = "redis://127.0.0.1:6379/15"
FAIRNESS_REDIS_URL = "redis://127.0.0.1:6379/14"
#: Prompt recovery: a job whose holder died is taken over 5 s later, the reconciler runs every second.
QUICK_RECOVERY = {"CERTFLEET_JOB_LEASE_SECONDS": "5", "CERTFLEET_RECONCILE_INTERVAL_SECONDS": "1"}


@dataclass
class World:
    stack: Stack
    client: CertfleetClient
    engine: sa.Engine
    redis: redis.Redis
    database: str

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-4000:]}" for p in self.stack.procs)


@contextmanager
def fault_world(tmp_path: Path, *, devices: int, sim_args: list[str] | None = None,
                env: dict[str, str] | None = None, workers: int = 2, controllers: int = 1,
                redis_url: str = REDIS_URL) -> Iterator[World]:
    postgres_or_skip()
    queue = redis.Redis.from_url(redis_url)
    queue.flushdb()
    try:
        with fresh_database() as database_url:
            stack = Stack(database_url=database_url, broker_url=redis_url, log_dir=tmp_path, devices=devices,
                          workers=workers, controllers=controllers, sim_args=sim_args,
                          extra_env={**QUICK_RECOVERY, **(env or {})})
            engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"),
                                      pool_pre_ping=True)
            try:
                with stack, CertfleetClient(stack.api_url, stack.token) as client:
                    assert client.import_devices(stack.sim_url)["imported"] == devices
                    yield World(stack, client, engine, queue, database_url.rsplit("/", 1)[1])
            finally:
                engine.dispose()
    finally:
        queue.flushdb()
        queue.close()


def start_batch(world: World, *, name: str = "vpn") -> dict:
    obj = world.client.create_enrollment_object(name=name, enrollment_type="self_signed", key_type="ecdsa",
                                                key_size=256, organization="Example Corp")
    return world.client.start_bulk_enrollment(obj["id"], selection={"all": True})


def poll(world: World, batch: dict) -> dict | None:
    """The batch's progress, or None while the controller cannot answer (its database is down)."""
    try:
        return world.client.bulk_enrollment(batch["id"])
    except (ApiError, httpx.HTTPError):
        return None


def wait_for(world: World, batch: dict, *, done: int = 0, timeout: float = 120) -> dict:
    """Poll until ``done`` jobs ended (or, by default, the whole batch); the last progress."""
    deadline = time.monotonic() + timeout
    last = batch
    while time.monotonic() < deadline:
        last = poll(world, batch) or last
        if last["finished"] or (done and last["succeeded"] + last["failed"] >= done):
            return last
        time.sleep(0.2)
    raise AssertionError(f"bulk enrollment not done within {timeout} s: {last}\n{world.logs()}")


def process_tree(pid: int) -> list[int]:
    """The process and its descendants, parents first."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal a process tree, deepest first (a parent's death must not warn its children first)."""
    pids = process_tree(pid)
    for p in reversed(pids):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return pids


def check_nothing_lost(world: World, *, total: int, failed: int = 0) -> dict[str, int]:
    """Every job ended; each succeeded trustpoint holds exactly one identity certificate, none
    issued twice; returns the job states counted."""
    with world.engine.connect() as conn:
        states = dict(conn.execute(sa.text("SELECT state, count(*) FROM job GROUP BY state")).all())
        per_trustpoint = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT trustpoint_id), count(DISTINCT fingerprint_sha256), "
            "count(DISTINCT job_id) FROM certificate WHERE role = 'identity'"
        )).one()
        available = conn.execute(sa.text(
            "SELECT count(*) FROM trustpoint WHERE identity_status = 'available'")).scalar_one()
    assert states == {k: v for k, v in {"succeeded": total - failed, "failed": failed}.items() if v}, states
    certificates, trustpoints, fingerprints, jobs = per_trustpoint
    assert certificates == trustpoints == fingerprints == jobs == available == total - failed, per_trustpoint
    return states


def jobs_taken_over(world: World) -> int:
    """Jobs another worker took over after their holder's lease ran out (their steps say so)."""
    with world.engine.connect() as conn:
        query = "SELECT count(*) FROM job WHERE CAST(steps AS TEXT) LIKE '%taken over after attempt%'"
        return conn.execute(sa.text(query)).scalar_one()
