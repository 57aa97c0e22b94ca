"""Engine and sessions for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel, create_engine

from shared import models
from shared.errors import ConfigurationError
from shared.settings import Settings


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=NullPool if ":memory:" not in url else None,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pool_pre_ping: a worker survives PostgreSQL dropping its connections.
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def check_columns(engine: Engine) -> None:
    """Refuse a database made by an older certfleet: create_all adds missing tables but not missing
    columns, which would otherwise surface as failed requests and jobs long after start-up."""
    inspector = inspect(engine)
    missing = []
    for table in SQLModel.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing += [(table.name, column) for column in table.columns if column.name not in present]
    if missing:
        statements = "; ".join(
            f"ALTER TABLE {table} ADD COLUMN {column.name} {column.type.compile(dialect=engine.dialect)}"
            for table, column in missing
        )
        raise ConfigurationError(
            f"the database at {engine.url.render_as_string(hide_password=True)} was made by an older certfleet: "
            f"{len(missing)} column{'s' if len(missing) != 1 else ''} missing. Add them ({statements}; "
            "NOT NULL ones need a default for existing rows) or start from a new database",
            code="database_schema_outdated",
        )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while workers write; busy_timeout waits out writer contention.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def init_db(engine: Engine) -> None:
    """Create the tables and the Global domain; safe to call from every process.

    Raises ConfigurationError when a table exists with fewer columns than this version has.
    """
    SQLModel.metadata.create_all(engine)
    check_columns(engine)
    with Session(engine) as session:
        if session.get(models.Domain, models.GLOBAL_DOMAIN_ID) is None:
            session.add(models.Domain(id=models.GLOBAL_DOMAIN_ID, name=models.GLOBAL_DOMAIN_NAME))
            try:
                session.commit()
            except Exception:  # another process created it first
                session.rollback()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session

