"""Engine and sessions for SQLite (embedded) and PostgreSQL.

The models (:mod:`shared.models`, with SQLModel) and the schema's revisions (:mod:`shared.schema`,
with Alembic) are imported by the functions that use them, not with this module: a worker
process never needs Alembic, and ``certfleet worker``, which only checks the database and then
supervises its worker processes, needs neither. Each is a few hundred milliseconds of CPU at the
start of every process that would otherwise import them for nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import NullPool

from shared.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Row
    from sqlmodel import Session

#: How long an SQLite connection waits for another one's write lock.
SQLITE_BUSY_TIMEOUT_S = 30
#: A PostgreSQL connection idle in the pool this long is pinged before it is used again.
IDLE_PING_SECONDS = 2.0


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            poolclass=NullPool if ":memory:" not in url else None,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=settings.db_pool_size, max_overflow=20)
    event.listen(engine, "checkin", _note_idle)
    dialect = engine.dialect
    event.listen(engine, "checkout", lambda dbapi_connection, record, _proxy: _ping_if_idle(
        dialect, dbapi_connection, record))
    return engine


def _note_idle(_dbapi_connection, record) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect, dbapi_connection, record) -> None:
    """A connection that sat in the pool for a while is pinged before use, so that a process survives
    PostgreSQL dropping its connections (a restart, an outage). One in steady use is not: a ping per
    checkout is a round trip per transaction, and a connection that breaks in use is invalidated with
    the rest of the pool on that first error anyway."""
    since = record.info.get("idle_since")
    if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
        return
    try:
        # The dialect's own ping (SQLAlchemy's pre-ping uses it): for psycopg it runs outside any
        # transaction, so the connection goes to work as it would have without the ping.
        alive = dialect.do_ping(dbapi_connection)
    except Exception:  # any failure to answer: this connection is gone, the pool makes a new one
        alive = False
    if not alive:
        raise DisconnectionError("connection was dropped while idle in the pool")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # busy_timeout waits out writer contention; WAL lets the API read while workers write.
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000:.0f}")
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _use_wal(cursor) -> None:
    """Switch the database to WAL, which lasts. Processes opening a new database together race
    to switch it, and SQLite fails the losers at once rather than making them wait: they try
    again (a no-op once the winner has switched it)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def init_db(engine: Engine) -> None:
    """Create the tables of an empty database and the Global domain; safe to call from every process.

    Raises ConfigurationError when the database's schema is not this version's: it needs
    ``certfleet db upgrade`` first, or was upgraded by a newer certfleet.
    """
    from sqlmodel import Session

    from shared import models
    from shared.schema import ensure_current

    ensure_current(engine)
    with Session(engine) as session:
        if session.get(models.Domain, models.GLOBAL_DOMAIN_ID) is None:
            session.add(models.Domain(id=models.GLOBAL_DOMAIN_ID, name=models.GLOBAL_DOMAIN_NAME))
            try:
                session.commit()
            except Exception:  # another process created it first
                session.rollback()


def plain_rows(session: Session, statement, parameters: dict | None = None) -> list[Row]:
    """The rows of a query of columns, read through the session's connection.

    ``session.execute`` would run them through the ORM's result machinery, which a query of
    columns does not need and which costs more CPU than the query itself (a page of 100
    trustpoints: about twice the database driver's work). Nothing pending in the session is
    flushed first: for reads that follow no write of their own.
    """
    return session.connection().execute(statement, parameters).all()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    from sqlmodel import Session

    with Session(engine, expire_on_commit=False) as session:
        yield session

