"""Engine and sessions for SQLite (embedded) and PostgreSQL.

The models (:mod:`shared.models`, with SQLModel) and the schema's revisions (:mod:`shared.schema`,
with Alembic) are imported by the functions that use them, not with this module: a worker
process never needs Alembic, and ``certfleet worker``, which only checks the database and then
supervises its worker processes, needs neither. Each is a few hundred milliseconds of CPU at the
start of every process that would otherwise import them for nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Column, Table, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
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


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (column key -> value, every row with the same keys) into ``table`` in the
    session's transaction, with each column's Python-side default where a row leaves it out.

    PostgreSQL gets them as one ``COPY``: an INSERT per row (psycopg's pipelined executemany)
    cost the client about 30 µs of CPU and the server about as much per row, which a bulk action
    of ten thousand jobs and trustpoints, and a worker batch's certificate rows, pay in full.
    Other databases get an executemany INSERT.
    """
    if not rows:
        return
    given = rows[0].keys()
    unknown = set(given) - set(table.columns.keys())
    if unknown:
        raise ValueError(f"table {table.name} has no column {', '.join(sorted(unknown))}")
    session.flush()  # as session.execute would: rows pending in the session may be referenced
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        connection.execute(table.insert(), list(rows))
        return
    columns = [c for c in table.columns if c.key in given or _python_default(c) is not None]
    dialect = connection.dialect
    fills = [_filler(c, dialect) for c in columns]
    names = ", ".join(dialect.identifier_preparer.format_column(c) for c in columns)
    command = f"COPY {dialect.identifier_preparer.format_table(table)} ({names}) FROM STDIN"
    driver = connection.connection.dbapi_connection
    cursor = driver.cursor()
    try:
        with cursor.copy(command) as copy:
            for row in rows:
                copy.write_row([fill(row) for fill in fills])
    except dialect.loaded_dbapi.Error as exc:
        # As an INSERT's would be: SQLAlchemy's exception (IntegrityError for a duplicate key),
        # and a connection that broke is not given back to the pool.
        gone = dialect.is_disconnect(exc, driver, cursor)
        if gone:
            connection.invalidate(exc)
        raise DBAPIError.instance(command, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=gone,
                                  dialect=dialect) from exc
    finally:
        cursor.close()


def _python_default(column: Column) -> Any:
    default = column.default
    return default if default is not None and (default.is_scalar or default.is_callable) else None


def _filler(column: Column, dialect) -> Callable[[Mapping[str, Any]], Any]:
    """How one row's value of ``column`` goes into the COPY: the row's value or the column's
    default, through the column type's own conversion (time zones, JSON) as an INSERT would."""
    key = column.key
    process = _json_text(column.type, dialect) if isinstance(column.type, JSON) else column.type.bind_processor(dialect)
    default = _python_default(column)

    def value(row: Mapping[str, Any]) -> Any:
        if key in row:
            return row[key]
        if default.is_scalar:
            return default.arg
        return default.arg(None)  # SQLAlchemy calls a default with the execution context, unused here

    if process is None:
        return value
    return lambda row: process(value(row))


def _json_text(kind: JSON, dialect) -> Callable[[Any], str | None]:
    """A JSON value as COPY takes it, its text (the driver would wrap it for an INSERT): None is
    JSON null unless the column keeps it as SQL NULL, as SQLAlchemy stores it."""
    serialize = dialect._json_serializer or json.dumps

    def text(value: Any) -> str | None:
        return None if value is None and kind.none_as_null else serialize(value)
    return text


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

