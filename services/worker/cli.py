"""``certfleet worker``: run Dramatiq worker processes, and the embedded worker for the demo.

``certfleet worker --processes P --threads T`` checks that the database is at this version's
schema revision (it never creates or changes the schema: the controller or ``certfleet db
upgrade`` does), prepares the environment (a private, empty Prometheus multiprocess
directory, the metrics address, the queue prefetch) and runs the dramatiq CLI on
:mod:`services.worker.main`, listening on both job queues. Stopping it (SIGTERM, SIGINT,
SIGHUP) stops the workers gracefully: running jobs finish, prefetched messages go back to Redis.

A refusal is a shared error (:mod:`shared.failures` prints it): exit 2 for settings or a
database that must change first, among them the development secret key (CERTFLEET_SECRET_KEY
unset), which only ``--insecure-dev-key`` allows; the worker processes learn that it was allowed
from :data:`INSECURE_DEV_KEY_ENV`.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.errors import ConfigurationError
from shared.settings import Settings, require_own_secret_key

if TYPE_CHECKING:
    import dramatiq

    from services.worker.context import WorkerContext

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Set to "1" for the worker processes when ``certfleet worker --insecure-dev-key`` allowed the
#: development key (they check the key again: ``dramatiq services.worker.main`` can be run alone).
INSECURE_DEV_KEY_ENV = "CERTFLEET_INSECURE_DEV_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads per process (default 8)")
    parser.add_argument("--insecure-dev-key", action="store_true",
                        help="run without CERTFLEET_SECRET_KEY, with the public development key: a local trial "
                             "only, stored secrets are not protected")


def dramatiq_command(*, processes: int, threads: int) -> list[str]:
    from shared.events import BULK_QUEUE, JOBS_QUEUE

    return [
        sys.executable, "-m", "dramatiq", "services.worker.main",
        "--processes", str(processes), "--threads", str(threads),
        "--queues", JOBS_QUEUE, BULK_QUEUE,
    ]


#: The longest an idle queue's consumer waits before asking Redis again, in milliseconds.
CONSUMER_IDLE_MS = 250
DB_POOL_SIZE_ENV = "CERTFLEET_DB_POOL_SIZE"
#: Pooled database connections beyond one per worker thread (a job's claim and its finish may
#: overlap another session briefly, as when a batch hands jobs back).
POOL_SPARE_CONNECTIONS = 2
#: Messages a worker process holds per queue for each of its threads, at least: with one each, a
#: thread that finishes its batch waits until the consumer next asks Redis (up to
#: CONSUMER_IDLE_MS); with two, the next message is already in the process.
PREFETCH_PER_THREAD = 2


def queue_prefetch(settings: Settings, threads: int) -> int:
    """Messages a worker process of ``threads`` threads holds per queue: the setting, or twice the
    threads when that is more."""
    return max(settings.queue_prefetch, PREFETCH_PER_THREAD * threads)


def worker_environment(settings: Settings, metrics_dir: str, base: Mapping[str, str], *,
                       insecure_dev_key: bool = False, threads: int = 8) -> dict[str, str]:
    env = dict(base)
    env.pop(INSECURE_DEV_KEY_ENV, None)
    if insecure_dev_key:
        env[INSECURE_DEV_KEY_ENV] = "1"
    env.update(
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        dramatiq_prom_db=metrics_dir,
        dramatiq_prom_host=settings.worker_metrics_host,
        dramatiq_prom_port=str(settings.worker_metrics_port),
    )
    # Read by dramatiq when it is imported: the messages a worker process holds ahead of its
    # threads, so a thread that finishes a batch finds the next one waiting instead of waiting for
    # the consumer's next look at Redis.
    env.setdefault("dramatiq_queue_prefetch", str(queue_prefetch(settings, threads)))
    # How long an idle queue's consumer waits at most before asking Redis again (dramatiq's default
    # is a second): an operator's single action is picked up within a quarter of a second while a
    # bulk action keeps every thread busy. An idle worker process spends 1.3 % of a core on it
    # (0.4 % at a second, 3 % at a tenth).
    env.setdefault("dramatiq_worker_timeout", str(CONSUMER_IDLE_MS))
    # Every worker thread holds a database connection through a job's transactions: with fewer
    # kept in the pool, connections would be opened and closed job after job (PostgreSQL forks a
    # backend for each).
    env.setdefault(DB_POOL_SIZE_ENV, str(max(settings.db_pool_size, threads + POOL_SPARE_CONNECTIONS)))
    return env


def main(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    require_own_secret_key(settings, service="worker", insecure_dev_key=args.insecure_dev_key)
    if args.processes < 1 or args.threads < 1:
        raise ConfigurationError("--processes and --threads must be at least 1", code="bad_worker_count")
    if not settings.broker_url:
        raise ConfigurationError("CERTFLEET_BROKER_URL is not set; worker processes need the Redis broker the "
                                 "controller publishes to, e.g. redis://127.0.0.1:6379/0", code="broker_url_missing")
    check_database(settings)
    # A fresh directory per run: multiprocess metric files left by an earlier run would be
    # summed into this one's.
    metrics_dir = tempfile.mkdtemp(prefix="certfleet-worker-metrics-")
    try:
        child = subprocess.Popen(
            dramatiq_command(processes=args.processes, threads=args.threads),
            env=worker_environment(settings, metrics_dir, os.environ, insecure_dev_key=args.insecure_dev_key,
                                   threads=args.threads),
            # Its own process group: a signal to ours reaches dramatiq once, through us
            # (dramatiq kills its workers outright on a second SIGTERM).
            process_group=0,
            preexec_fn=_stop_with_parent,
        )
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
        return child.wait()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def check_database(settings: Settings) -> None:
    """Refuse, before any worker process starts, a database whose schema is not this version's:
    jobs would fail on it one by one. Nothing is created or changed (:func:`shared.schema.check_current`)."""
    from shared.db import make_engine
    from shared.schema import check_current

    engine = make_engine(settings)
    try:
        check_current(engine)
    finally:
        engine.dispose()


def _stop_with_parent() -> None:
    """Linux: should this process die without forwarding a signal (SIGKILL), the kernel sends
    SIGTERM to dramatiq, so no worker outlives the command that started it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_embedded_worker(
    broker: dramatiq.Broker, context: WorkerContext, threads: int = 8, *, worker_timeout_ms: int = CONSUMER_IDLE_MS
) -> dramatiq.Worker:
    """Worker threads in this process, for the embedded stack (the in-process broker, or
    Redis in tests). Declare the actors first (:func:`services.worker.actors.declare_actors`).
    Stop it with ``worker.stop()``."""
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    if not isinstance(broker, StubBroker):
        # What the dramatiq CLI does in each worker process; it starts the time-limit watchdog.
        # (shared.broker.make_broker has already done it for the in-process broker.)
        broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=worker_timeout_ms)
    worker.queue_prefetch = queue_prefetch(context.settings, threads)
    worker.start()
    return worker
