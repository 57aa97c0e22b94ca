"""Engine and sessions for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel, create_engine, select

from shared import models
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


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while workers write; busy_timeout waits out writer contention.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def init_db(engine: Engine) -> None:
    """Create the tables and the Global domain; safe to call from every process."""
    SQLModel.metadata.create_all(engine)
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


def global_domain(session: Session) -> models.Domain:
    return session.exec(select(models.Domain).where(models.Domain.id == models.GLOBAL_DOMAIN_ID)).one()
