"""PostgreSQL connections in a process's pool: one that PostgreSQL dropped while it sat idle is
replaced before use, so the next transaction works without the caller seeing an error."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from shared import db
from tests.support.pg import admin_url


def backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def terminate(pid: int) -> None:
    with psycopg.connect(admin_url(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def test_a_connection_dropped_while_idle_is_replaced_before_use(pg_engine, monkeypatch):
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)  # every connection back in the pool counts as idle
    dropped = backend_pid(pg_engine)
    terminate(dropped)
    assert backend_pid(pg_engine) != dropped  # a new connection, and no error
    with pg_engine.connect() as conn:  # pinged again: the ping left no transaction open behind it
        assert conn.connection.dbapi_connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_connection_in_steady_use_is_not_pinged(pg_engine, monkeypatch):
    """Without the idle ping a dropped connection surfaces as an error on first use: proof that a
    connection used a moment ago goes straight to work, without a round trip first."""
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 3600.0)
    dropped = backend_pid(pg_engine)
    terminate(dropped)
    with pytest.raises(Exception, match="terminat|closed|connection"):
        backend_pid(pg_engine)
    assert backend_pid(pg_engine) != dropped  # the pool replaced it after that first error
