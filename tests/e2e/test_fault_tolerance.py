"""Nothing lost: bulk enrollments through the multi-process stack (controller, worker processes
- two where one is killed -, device simulator; PostgreSQL and Redis) while things break under them.

- a worker process killed with SIGKILL mid-batch: its jobs are taken over when their lease ends;
- the broker's Redis database flushed mid-batch: the reconciler publishes the jobs again;
- PostgreSQL refusing and dropping connections for seconds: workers and controller retry;
- devices failing, hanging and unreachable: every job ends within its attempts, and the
  permanent failures say which device and why;
- and an operator's single Add is not stuck behind a running batch.

Each test checks in the database that every job ended and each trustpoint holds exactly one
identity certificate, none issued twice.
"""

from __future__ import annotations

import signal
import threading
import time

import psycopg
import pytest
from psycopg import sql

from services.device_sim.faults import FaultPlan
from tests.support.batch_checks import (
    REDIS_URL,  # noqa: F401  (its xdist group)
    check_nothing_lost,
    fault_world,
    jobs_taken_over,
    kill_tree,
    start_batch,
    wait_for,
)
from tests.support.pg import admin_url

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

#: Longer than a worker's database retries' first backoffs, so work really stops and resumes.
OUTAGE_SECONDS = 4.0


def test_a_worker_killed_then_the_queue_flushed_mid_batch_loses_nothing_and_issues_nothing_twice(tmp_path):
    # Two faults in one batch: a worker process killed with what it held, then the broker's queue
    # flushed with what was waiting. The reconciler finds both kinds of lost job.
    with fault_world(tmp_path, devices=250, sim_args=["--latency-ms", "15"]) as world:
        batch = start_batch(world)
        wait_for(world, batch, done=50)
        victim = world.stack.worker_procs()[0]
        killed = kill_tree(victim.popen.pid, signal.SIGKILL)
        assert len(killed) >= 3  # certfleet worker, the dramatiq main process, its worker process
        mid = wait_for(world, batch, done=110)
        assert not mid["finished"], mid  # the flush lands in the middle of the batch
        world.redis.flushdb()  # this test's own database only: others share the server
        final = wait_for(world, batch, timeout=150)
        assert (final["succeeded"], final["failed"]) == (250, 0), final
        check_nothing_lost(world, total=250)
        # The killed worker was holding jobs: they were taken over, not run twice at once.
        assert jobs_taken_over(world) >= 1


def _refuse_connections(database: str, seconds: float, dropped: list[int]) -> None:
    """PostgreSQL refuses new connections to ``database`` and drops its open ones for ``seconds``;
    the connections it dropped are counted into ``dropped``."""
    with psycopg.connect(admin_url(), autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(database)))
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                cut = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchall()
                dropped.append(len(cut))
                time.sleep(0.25)
        finally:
            allow = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(database))
            admin.execute(allow)


def test_postgresql_gone_for_seconds_mid_batch_loses_nothing(tmp_path):
    with fault_world(tmp_path, devices=250, sim_args=["--latency-ms", "15"], workers=1) as world:
        batch = start_batch(world)
        mid = wait_for(world, batch, done=60)
        assert not mid["finished"], mid
        dropped: list[int] = []
        outage = threading.Thread(target=_refuse_connections, args=(world.database, OUTAGE_SECONDS, dropped))
        started = time.monotonic()
        outage.start()
        outage.join()
        assert time.monotonic() - started >= OUTAGE_SECONDS
        assert sum(dropped) > 0  # the workers' and the controller's open connections were cut
        final = wait_for(world, batch, timeout=150)
        assert (final["succeeded"], final["failed"]) == (250, 0), final
        check_nothing_lost(world, total=250)


def test_faulty_devices_every_job_ends_within_its_attempts_with_clear_failures(tmp_path):
    devices, seed = 200, 7  # tests.support.procs.Stack runs the simulator with --seed 7
    sim_args = ["--latency-ms", "2", "--error-rate", "0.05", "--timeout-rate", "0.02", "--hang-seconds", "3",
                "--unreachable-rate", "0.01"]
    env = {"CERTFLEET_DEVICE_TIMEOUT_SECONDS": "1", "CERTFLEET_RETRY_BACKOFF_MS": "100",
           "CERTFLEET_RETRY_BACKOFF_MAX_MS": "1000"}
    with fault_world(tmp_path, devices=devices, sim_args=sim_args, env=env, workers=1) as world:
        batch = start_batch(world)
        final = wait_for(world, batch, timeout=150)
        plan = FaultPlan(seed=seed, unreachable_rate=0.01)
        unreachable = {d["serial"] for d in world.client.devices() if plan.is_unreachable(d["serial"])}
        assert unreachable, "the seed should make some devices unreachable"
        assert final["failed"] >= len(unreachable)
        check_nothing_lost(world, total=devices, failed=final["failed"])
        with world.engine.connect() as conn:
            import sqlalchemy as sa

            jobs = conn.execute(sa.text(
                "SELECT d.serial, j.attempts, j.max_attempts, j.state, j.error_code, j.error_message "
                "FROM job j JOIN device d ON d.id = j.device_id")).all()
            retried_for = conn.execute(sa.text("SELECT steps FROM job")).scalars().all()
        assert all(attempts <= max_attempts for _, attempts, max_attempts, *_ in jobs)
        # Both kinds of transient trouble happened and were retried, not only the errors.
        retry_codes = {s["detail"].split(":", 1)[0] for steps in retried_for for s in steps
                       if s["step"] == "retry_scheduled"}
        assert {"device_timeout", "device_error"} <= retry_codes, retry_codes
        failed = {serial: (code, message) for serial, _, _, state, code, message in jobs if state == "failed"}
        assert unreachable <= set(failed)
        for serial in unreachable:
            code, message = failed[serial]
            assert code == "device_unreachable"
            assert message.startswith(f"device {serial} unreachable after 5 attempts")
        for serial, (code, message) in failed.items():  # unlucky five times in a row, if any
            assert code in ("device_unreachable", "device_error", "device_timeout"), (code, message)
            assert f"device {serial}" in message and "after 5 attempts" in message
        # Retries happened (errors and timeouts), and stayed within the attempts.
        assert any(attempts > 1 for serial, attempts, _, state, *_ in jobs if state == "succeeded")


def test_a_single_add_is_not_stuck_behind_a_running_batch(tmp_path):
    with fault_world(tmp_path, devices=450, sim_args=["--latency-ms", "30"]) as world:
        batch = start_batch(world)
        wait_for(world, batch, done=50)
        single = world.client.create_enrollment_object(name="single", enrollment_type="self_signed",
                                                       key_type="ecdsa", key_size=256)
        device = world.client.find_devices(serial="FTD-000001")[0]
        at_single_start = world.client.bulk_enrollment(batch["id"])
        job = world.client.add_trustpoint(device["id"], single["id"])["job"]
        while world.client.job(job["id"])["state"] not in ("succeeded", "failed"):
            time.sleep(0.05)
        at_single_end = world.client.bulk_enrollment(batch["id"])
        wait_for(world, batch, timeout=120)
        assert world.client.job(job["id"])["state"] == "succeeded"
        # Judged by work, not seconds: the single job did not wait for the bulk jobs queued
        # before it, as a FIFO would have; at most for those the workers had fetched ahead.
        assert not at_single_end["finished"], at_single_end
        assert at_single_end["queued"] > at_single_start["queued"] / 3, (at_single_start, at_single_end)
        check_nothing_lost(world, total=451)
