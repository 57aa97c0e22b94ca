"""Fixtures any test may use. Each gives a real component and cleans up after itself:

- ``sqlite_engine``: an initialised SQLite database in a file of the test's temp folder (a copy
  of one made per test process);
- ``pg_engine``: an initialised PostgreSQL database made for the test and dropped after
  (skips without a server, fails under ``CI=true``);
- ``db_engine``: parametrise with ``indirect=True`` and "sqlite" or "postgres" to run a test
  on either (defaults to SQLite);
- ``stub_broker``: Dramatiq's in-process broker, emptied afterwards;
- ``api``: the controller's API on ``db_engine`` and ``stub_broker``, with a token per role.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy.engine import Engine

from shared import logging as shared_logging
from shared.broker import make_broker
from shared.db import init_db, make_engine
from shared.settings import Settings
from tests.support.api import Api, start_api
from tests.support.pg import fresh_database, postgres_or_skip

# Tests configure logging over and over in one process (a command's main() sets its level): a
# logger must follow the configuration of the moment, not the one of its first use.
shared_logging.CACHE_LOGGERS = False


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap() -> None:
    """What a test process holds when a module starts (the libraries, the session's fixtures, the
    caches warmed so far) is moved out of the garbage collector's reach. A test process keeps
    growing as it runs file after file, and each full collection walks all of it: that was a
    sixth of the CPU of tests/integration/controller/api (13 of 76 s, in 39 collections) before
    this, 4 s after. The previous module's fixtures are torn down by now, and collected first."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    """A database at the head revision, made once per test process: each test gets a copy of
    the file (a few milliseconds) instead of creating the tables again (tens)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "certfleet.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
    init_db(engine)
    engine.dispose()
    return path


@pytest.fixture
def sqlite_engine(tmp_path, _sqlite_template) -> Iterator[Engine]:
    path = tmp_path / "certfleet.db"
    shutil.copyfile(_sqlite_template, path)
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
    init_db(engine)  # checks the copy is at the head, as start-up does
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    postgres_or_skip()
    with fresh_database() as url:
        engine = make_engine(Settings(database_url=url))
        init_db(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def db_engine(request) -> Engine:
    """SQLite by default; ``@pytest.mark.parametrize("db_engine", ["sqlite", "postgres"],
    indirect=True)`` runs the test on both."""
    kind = getattr(request, "param", "sqlite")
    if kind not in ("sqlite", "postgres"):
        raise ValueError(f"db_engine is 'sqlite' or 'postgres', not {kind!r}")
    return request.getfixturevalue("pg_engine" if kind == "postgres" else "sqlite_engine")


@pytest.fixture
def stub_broker() -> Iterator[dramatiq.Broker]:
    broker = make_broker(Settings(broker_url=""))
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def api(db_engine, stub_broker):
    client, tokens = start_api(db_engine, stub_broker)
    with client:
        yield Api(client=client, engine=db_engine, broker=stub_broker, tokens=tokens)


#: The files that take longest (each tens of seconds, mostly waiting on the services they
#: start), longest first. They are handed out first, so no process is left running one of
#: them alone at the end of the suite while the others are idle. (``--no-loadscope-reorder``
#: in pyproject keeps xdist from handing files out by their number of tests instead.)
SLOWEST_FIRST = (
    "tests/e2e/test_renewal.py", "tests/e2e/test_fault_tolerance.py", "tests/e2e/test_demo.py",
    "tests/e2e/test_ca_fairness.py", "tests/e2e/test_ca_bundle_updates.py", "tests/e2e/test_health_alerts.py",
    "tests/e2e/test_observability.py", "tests/integration/controller/api/test_openapi_conformance.py",
    "tests/integration/controller/api/test_access_matrix.py",
    "tests/e2e/test_scep.py", "tests/e2e/test_est.py", "tests/e2e/test_revocation_scan.py",
    "tests/integration/controller/api/test_api.py", "tests/e2e/test_operator_cli.py",
    "tests/e2e/test_bulk_cli.py", "tests/e2e/test_fleet.py", "tests/e2e/test_bench_fleet.py",
)


def pytest_collection_modifyitems(config, items):
    """A test module that uses a Redis database names it in ``REDIS_URL`` and may flush it. The
    suite runs its files on several processes at once (pytest-xdist, one file per process at a
    time), so no two files may name the same database: this refuses to run a suite where they do.
    Then the slowest files are moved to the front (see :data:`SLOWEST_FIRST`)."""
    rank = {path: position for position, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
    owners: dict[str, set[str]] = {}
    for item in items:
        url = getattr(getattr(item, "module", None), "REDIS_URL", None)
        if url:
            owners.setdefault(url, set()).add(item.module.__name__)
    shared = {url: sorted(modules) for url, modules in owners.items() if len(modules) > 1}
    if shared:
        raise pytest.UsageError(f"test modules share a Redis database, give each its own: {shared}")
