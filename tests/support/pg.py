"""Throwaway PostgreSQL databases for tests and benchmarks.

:func:`fresh_database` creates ``certfleet_test_<random>`` on the local server and drops it
afterwards, whatever happened inside. Tests call :func:`postgres_or_skip` first: without a
server it skips, unless ``CI=true``, where a missing server is a failure.

The maintenance connection goes to the ``test`` database as ``postgres`` (then ``root``);
``CERTFLEET_TEST_POSTGRES_URL`` overrides it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

CANDIDATE_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


class PostgresUnavailable(RuntimeError):
    pass


def admin_url() -> str:
    """The first maintenance URL that accepts a connection."""
    override = os.environ.get("CERTFLEET_TEST_POSTGRES_URL")
    candidates = (override,) if override else CANDIDATE_URLS
    problems = []
    for url in candidates:
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error as exc:
            problems.append(f"{url}: {exc}".strip())
    raise PostgresUnavailable("no PostgreSQL server for tests:\n" + "\n".join(problems))


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def fresh_database() -> Iterator[str]:
    """Yield the ``postgresql://`` URL of a new, empty database; drop it afterwards."""
    admin = admin_url()
    name = f"certfleet_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            # FORCE: a pooled connection some test forgot to close must not keep it alive.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def postgres_or_skip() -> None:
    """Skip the calling test when PostgreSQL is absent; fail instead under CI=true."""
    import pytest

    try:
        admin_url()
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and PostgreSQL is unreachable: {exc}")
        pytest.skip(f"PostgreSQL is unreachable: {exc}")


def database_exists(name: str) -> bool:
    with psycopg.connect(admin_url()) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None
