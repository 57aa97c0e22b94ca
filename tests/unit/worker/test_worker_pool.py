"""A worker process keeps a database connection for each of its threads: with fewer pooled, every
job past the pool's size would open a PostgreSQL connection and close it again (a new backend
forked per transaction)."""

from __future__ import annotations

import threading

import psycopg
import pytest

from services.worker.cli import DB_POOL_SIZE_ENV, worker_environment
from shared.db import make_engine
from shared.errors import ConfigurationError
from shared.settings import Settings
from tests.support.pg import fresh_database, postgres_or_skip


@pytest.mark.parametrize(("threads", "expected"), [(4, "10"), (8, "10"), (16, "18"), (32, "34")])
def test_the_worker_processes_pool_a_connection_per_thread(threads, expected):
    env = worker_environment(Settings(), "/tmp/metrics", {}, threads=threads)
    assert env[DB_POOL_SIZE_ENV] == expected
    assert Settings.from_env(env).db_pool_size == int(expected)


@pytest.mark.parametrize(("threads", "prefetch", "expected"), [(4, 16, "16"), (8, 16, "16"), (16, 16, "32"),
                                                              (16, 64, "64")])
def test_a_worker_process_holds_at_least_two_messages_per_thread(threads, prefetch, expected):
    # With one message per thread, a thread that finishes its batch waits for the consumer's next
    # look at Redis (a quarter of a second when the queue was at its limit) with work waiting there.
    env = worker_environment(Settings(queue_prefetch=prefetch), "/tmp/metrics", {}, threads=threads)
    assert env["dramatiq_queue_prefetch"] == expected


def test_a_pool_size_the_operator_set_is_kept():
    env = worker_environment(Settings(), "/tmp/metrics", {DB_POOL_SIZE_ENV: "40"}, threads=16)
    assert env[DB_POOL_SIZE_ENV] == "40"


def test_a_pool_size_below_one_is_refused():
    with pytest.raises(ConfigurationError, match="DB_POOL_SIZE"):
        Settings.from_env({DB_POOL_SIZE_ENV: "0"})


def _backends(url: str) -> set[int]:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)).fetchall()
    return {pid for (pid,) in rows}


def test_sixteen_threads_reuse_sixteen_postgresql_backends():
    postgres_or_skip()
    with fresh_database() as url:
        engine = make_engine(Settings(database_url=url, db_pool_size=18))
        try:
            barrier = threading.Barrier(16)

            def transaction() -> None:
                with engine.connect() as connection:
                    barrier.wait(10)  # all sixteen connections checked out at once
                    connection.exec_driver_sql("SELECT 1")

            def round_() -> set[int]:
                threads = [threading.Thread(target=transaction) for _ in range(16)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(15)
                return _backends(url)

            first, second = round_(), round_()
        finally:
            engine.dispose()
    assert len(first) == 16 and second == first  # kept open, and the same backends served again
