"""``certfleet worker`` as an operator runs it: a separate process running Dramatiq worker
processes on Redis (db 12), enrolling against the device simulator, serving its metrics,
and stopping cleanly on SIGTERM; and refusing to start, with one error line and exit 2, on
settings or a database it cannot work with (it never makes the schema itself)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from sqlmodel import SQLModel, select

from services.device_sim.config import SimConfig
from services.device_sim.server import start_in_thread
from shared.broker import make_broker
from shared.db import init_db, make_engine, session_scope
from shared.device_api import Inventory
from shared.events import BULK_QUEUE, publish_job
from shared.models import GLOBAL_DOMAIN_ID, Device, EnrollmentObject, Job, Trustpoint
from shared.settings import Settings
from tests.support.pg import fresh_database, postgres_or_skip
from tests.support.procs import ROOT, free_port, with_test_key

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/4"


@pytest.fixture
def clean_redis():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and Redis is unreachable: {exc}")
        pytest.skip(f"Redis is unreachable: {exc}")
    client.flushdb()
    yield
    client.flushdb()
    client.close()


def certfleet_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker", "--processes", "1", "--threads", "4"],
        cwd=ROOT, env=with_test_key(env), stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


def scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
    except httpx.HTTPError:
        return ""


def test_worker_command_enrolls_serves_metrics_and_stops_cleanly(tmp_path, clean_redis):
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    metrics_port = free_port()
    settings = Settings(database_url=database_url, broker_url=REDIS_URL)
    engine = make_engine(settings)
    init_db(engine)
    env = {
        **os.environ,
        "CERTFLEET_DATABASE_URL": database_url,
        "CERTFLEET_BROKER_URL": REDIS_URL,
        "CERTFLEET_WORKER_METRICS_PORT": str(metrics_port),
        "CERTFLEET_LOG_LEVEL": "INFO",
        "TMPDIR": str(tmp_path),  # where the command makes its private metrics directory
    }
    log = tmp_path / "worker.log"
    worker = certfleet_worker(env, log)
    broker = make_broker(settings)
    try:
        with start_in_thread(SimConfig(devices=3, seed=2)) as sim:
            inventory = Inventory.model_validate_json(httpx.get(f"{sim.url}/api/inventory").content)
            with session_scope(engine) as session:
                obj = EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name="vpn", enrollment_type="self_signed",
                                       key_type="ecdsa", key_size=256)
                session.add(obj)
                jobs = []
                for info in inventory.items:
                    device = Device(domain_id=GLOBAL_DOMAIN_ID, name=info.name, serial=info.serial,
                                    management_url=info.management_url)
                    session.add(device)
                    session.flush()
                    tp = Trustpoint(device_id=device.id, domain_id=GLOBAL_DOMAIN_ID,
                                    enrollment_object_id=obj.id, name="vpn", enrollment_type="self_signed")
                    session.add(tp)
                    session.flush()
                    jobs.append(Job(kind="enroll", trustpoint_id=tp.id, device_id=device.id,
                                    domain_id=GLOBAL_DOMAIN_ID, trustpoint_name="vpn"))
                session.add_all(jobs)
                session.commit()
            for job in jobs:
                publish_job(broker, "enroll", job.id, queue=BULK_QUEUE)

            def finished():
                with session_scope(engine) as session:
                    states = session.exec(select(Job.state)).all()
                return states if set(states) == {"succeeded"} else None

            wait_for(finished, 30, f"jobs did not succeed:\n{log.read_text()[-2000:]}")

        metrics = wait_for(lambda: "certfleet_jobs_total" in (text := scrape(metrics_port)) and text, 10,
                           "the worker's metrics did not show the jobs")
        assert 'certfleet_jobs_total{kind="enroll",outcome="succeeded"} 3.0' in metrics
        assert 'certfleet_enrollments_total{method="self_signed",outcome="succeeded"} 3.0' in metrics
        # Outcomes that have not happened yet are there at 0: rate() sees their first increment.
        assert 'certfleet_enrollments_total{method="est",outcome="failed"} 0.0' in metrics
        assert 'certfleet_renewals_total{method="scep",outcome="failed"} 0.0' in metrics
        assert "dramatiq_messages_total" in metrics
        assert len(list(tmp_path.glob("certfleet-worker-metrics-*"))) == 1

        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        broker.close()
        engine.dispose()

    output = log.read_text()
    assert output.count('"event": "job succeeded"') == 3
    assert "Worker has been shut down" in output
    assert list(tmp_path.glob("certfleet-worker-metrics-*")) == []  # cleared away
    assert scrape(metrics_port) == ""  # nothing left serving


def refused_worker(database_url: str | None = None, *args: str) -> subprocess.CompletedProcess:
    """``certfleet worker`` expected to refuse to start, so run to its end."""
    env = {k: v for k, v in os.environ.items() if k not in ("CERTFLEET_BROKER_URL", "CERTFLEET_DATABASE_URL")}
    if database_url is not None:
        env.update(CERTFLEET_DATABASE_URL=database_url, CERTFLEET_BROKER_URL=REDIS_URL)
    return subprocess.run([sys.executable, "-m", "services.cli", "worker", *args], cwd=ROOT, env=with_test_key(env),
                          capture_output=True, text=True, timeout=60)


def test_worker_command_without_a_broker_says_what_to_set():
    done = refused_worker()
    assert (done.returncode, done.stderr) == (2, "error: broker_url_missing: CERTFLEET_BROKER_URL is not set; "
                                                 "worker processes need the Redis broker the controller publishes "
                                                 "to, e.g. redis://127.0.0.1:6379/0\n")


def test_worker_command_refuses_no_worker_processes(tmp_path):
    done = refused_worker(f"sqlite:///{tmp_path / 'certfleet.db'}", "--processes", "0")
    assert (done.returncode, done.stderr) == (
        2, "error: bad_worker_count: --processes and --threads must be at least 1\n")


def test_worker_command_refuses_a_database_that_needs_db_upgrade(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(Settings(database_url=database_url))
    SQLModel.metadata.create_all(engine)  # what certfleet made before it kept schema revisions
    engine.dispose()

    done = refused_worker(database_url)

    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: database_upgrade_required: the database at {database_url} was made "
                                  "by a certfleet from before schema revisions: run `certfleet db upgrade` once")
    assert done.stderr.count("\n") == 1  # the refusal alone: no worker process started to log anything


@pytest.mark.parametrize("existing", [False, True], ids=["no file", "empty file"])
def test_worker_command_refuses_an_empty_database_and_creates_nothing(tmp_path, existing):
    path = tmp_path / "certfleet.db"
    if existing:
        path.touch()

    done = refused_worker(f"sqlite:///{path}")

    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: database_empty: the database at sqlite:///{path} has no certfleet tables yet: start the "
        "controller first, which creates them, or run `certfleet db upgrade` with CERTFLEET_DATABASE_URL naming "
        "this database\n")
    assert path.exists() is existing
    if existing:
        engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
        try:
            assert sa.inspect(engine).get_table_names() == []
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_worker_command_leaves_an_empty_postgresql_database_empty():
    postgres_or_skip()
    with fresh_database() as url:
        done = refused_worker(url)
        engine = make_engine(Settings(database_url=url))
        try:
            tables = sa.inspect(engine).get_table_names()
        finally:
            engine.dispose()
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: database_empty: the database at postgresql+psycopg://")
    assert "start the controller first" in done.stderr
    assert tables == []


def test_the_command_s_check_loads_no_models_and_a_worker_process_no_alembic(sqlite_engine):
    # Every worker start pays for what its processes import: the command only checks the database
    # and then supervises its worker processes; a worker process never changes the schema.
    env = with_test_key({**os.environ, "CERTFLEET_DATABASE_URL": sqlite_engine.url.render_as_string(False),
                         "CERTFLEET_BROKER_URL": "redis://127.0.0.1:9/0"})  # importing connects to nothing
    loaded = "print(' '.join(m for m in {names!r} if m in sys.modules))"
    check = ("import sys\nfrom services.worker.cli import check_database\nfrom shared.settings import Settings\n"
             "check_database(Settings.from_env())\n" + loaded.format(names=("sqlmodel", "shared.models")))
    worker = "import sys\nimport services.worker.main\n" + loaded.format(names=("alembic", "shared.schema"))
    for script in (check, worker):
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [], script
