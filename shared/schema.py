"""The database schema's revision, and what start-up and ``certfleet db upgrade`` do about it.

A database records which revision its tables are at in Alembic's ``alembic_version`` table.
The revisions are in shared/migrations/versions; the newest one, the head, matches the models.

- :func:`ensure_current`, at the controller's start-up (and the embedded stack's): an empty
  database gets the tables of the head revision; a database at the head passes; any other is
  refused with a ConfigurationError naming ``certfleet db upgrade`` (or, for a revision this
  version does not know, saying a newer certfleet made it).
- :func:`check_current`, at the workers' start-up: the same refusals, changing nothing. The
  workers never make the schema: an empty database (or a SQLite file that does not exist) is
  refused too, with a message to start the controller or run ``certfleet db upgrade`` first,
  so a worker given the wrong database URL fails at once instead of waiting on a new one.
- :func:`upgrade_to_head`, behind ``certfleet db upgrade``: runs the revisions a database lacks.

A database with certfleet's tables and no revision was made before certfleet kept revisions.
Start-up refuses it too; when its tables lack a column the first revision has, the message gives
the ALTER TABLE statements that add them. Once it has them, the upgrade adds the tables it lacks,
as start-up used to, records it as the first revision and runs the others.

A model change needs a new revision written in versions/ with explicit ``op`` calls (a column
change on SQLite goes through ``op.batch_alter_table``); the schema test fails until it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from shared.errors import ConfigurationError

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
UPGRADE_COMMAND = "certfleet db upgrade"
#: The schema certfleet had when it started recording revisions.
FIRST_REVISION = "0001"
#: PostgreSQL advisory lock that serialises schema changes between processes starting together.
_PG_LOCK_KEY = 0x63657274


@dataclass(frozen=True)
class Revisions:
    scripts: ScriptDirectory
    head: str
    known: frozenset[str]


@cache
def _load(location: Path) -> Revisions:
    scripts = ScriptDirectory(location)
    head = scripts.get_current_head()
    assert head is not None, f"no revision in {location / 'versions'}"
    return Revisions(scripts, head, frozenset(script.revision for script in scripts.walk_revisions()))


def revisions() -> Revisions:
    """This version's revisions, read once per process."""
    return _load(MIGRATIONS)


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration for running the revisions on ``connection``, without an alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def model_metadata() -> MetaData:
    """certfleet's tables as the models declare them. The models are imported here, on first use,
    not with this module: a database at the head revision passes the checks without them, so
    ``certfleet worker``, which checks the database and then only supervises its worker processes,
    never loads them (some 300 ms of CPU)."""
    from sqlmodel import SQLModel

    from shared import models  # noqa: F401  registers the tables on SQLModel.metadata

    return SQLModel.metadata


@dataclass(frozen=True)
class SchemaState:
    """What a database holds: the revision it records and the tables it has."""

    revision: str | None
    #: Every table of the database, certfleet's or not.
    names: frozenset[str]

    @property
    def tables(self) -> frozenset[str]:
        """Which of certfleet's tables exist."""
        return self.names & model_metadata().tables.keys()

    @property
    def empty(self) -> bool:
        return self.revision is None and not self.tables

    def describe(self) -> str:
        if self.revision is not None:
            return f"revision {self.revision}"
        return "tables made before schema revisions" if self.tables else "an empty database"


def read_state(connection: Connection) -> SchemaState:
    names = frozenset(inspect(connection).get_table_names())
    revision = None
    if VERSION_TABLE in names:
        revision = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return SchemaState(revision=revision, names=names)


def ensure_current(engine: Engine) -> None:
    """Give an empty database the head revision's tables; refuse one at any other revision.

    Raises ConfigurationError (database_upgrade_required, database_schema_outdated or
    database_revision_unknown) for a database this version cannot use as it is.
    """
    current = revisions()
    with engine.connect() as connection:
        state = read_state(connection)
        if state.revision == current.head:
            return
        if state.empty:
            _lock(connection)
            state = read_state(connection)  # another process may have made them meanwhile
            if state.empty:
                # create_all and a stamp take a fraction of the time replaying the revisions does;
                # the schema test holds both to the same tables.
                model_metadata().create_all(connection)
                MigrationContext.configure(connection).stamp(current.scripts, current.head)
                connection.commit()
                return
            if state.revision == current.head:
                return
        _refuse(connection, state)


def check_current(engine: Engine) -> None:
    """Refuse a database that is not at the head revision, creating and changing nothing.

    Raises ConfigurationError: database_empty for a database without certfleet's tables,
    database_unreachable when no connection can be made, or one of :func:`ensure_current`'s.
    """
    where = engine.url.render_as_string(hide_password=True)
    if _missing_sqlite_file(engine.url):  # connecting would create it
        raise _empty(where)
    connection = connect(engine)
    with connection:
        state = read_state(connection)
        if state.revision == revisions().head:
            return
        if state.empty:
            raise _empty(where)
        _refuse(connection, state)


def connect(engine: Engine) -> Connection:
    """A connection to the database; ConfigurationError database_unreachable, saying why, when
    none can be made (server down, wrong host or password, a directory that does not exist)."""
    try:
        return engine.connect()
    except OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise ConfigurationError(f"cannot connect to the database at {where}: {reason(exc)}",
                                 code="database_unreachable") from None


def reason(exc: SQLAlchemyError) -> str:
    """What the database said, without SQLAlchemy's statement and links: its first line."""
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _missing_sqlite_file(url: URL) -> bool:
    database = url.database or ""
    return (url.get_backend_name() == "sqlite" and database not in ("", ":memory:")
            and not database.startswith("file:") and not Path(database).exists())


def _empty(where: str) -> ConfigurationError:
    return ConfigurationError(
        f"the database at {where} has no certfleet tables yet: start the controller first, which creates "
        f"them, or run `{UPGRADE_COMMAND}` with CERTFLEET_DATABASE_URL naming this database",
        code="database_empty",
    )


@dataclass(frozen=True)
class Upgrade:
    before: SchemaState
    after: str

    @property
    def changed(self) -> bool:
        return self.before.revision != self.after

    def describe(self) -> str:
        if not self.changed:
            return f"already at revision {self.after}, the newest: nothing to do"
        return f"upgraded from {self.before.describe()} to revision {self.after}"


def upgrade_to_head(engine: Engine) -> Upgrade:
    """Bring the database to the head revision; nothing to do when it is there already.

    Raises ConfigurationError for a revision this version does not know, or for tables made
    before schema revisions that lack columns (with the statements that add them).
    """
    current = revisions()
    with engine.connect() as connection:
        _lock(connection)
        state = read_state(connection)
        if state.revision is None and state.tables:
            # Made before revisions: it has the first revision's tables (those it lacks are
            # added, as start-up used to). Recorded as that revision, it then takes the rest.
            check_columns(connection)
            first = first_revision_columns()
            metadata = model_metadata()
            metadata.create_all(connection, tables=[t for t in metadata.sorted_tables if t.name in first])
            MigrationContext.configure(connection).stamp(current.scripts, FIRST_REVISION)
            command.upgrade(alembic_config(connection), current.head)
        elif state.revision != current.head:
            if state.revision is not None and state.revision not in current.known:
                raise _unknown(connection, state.revision)
            command.upgrade(alembic_config(connection), current.head)
        connection.commit()
    return Upgrade(before=state, after=current.head)


@cache
def first_revision_columns() -> dict[str, frozenset[str]]:
    """Table name to column names, as the first revision makes them: the schema of a database
    from before revisions. Read by building that revision in an in-memory SQLite database."""
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as connection:
            command.upgrade(alembic_config(connection), FIRST_REVISION)
            inspector = inspect(connection)
            return {name: frozenset(column["name"] for column in inspector.get_columns(name))
                    for name in inspector.get_table_names() if name != VERSION_TABLE}
    finally:
        engine.dispose()


def check_columns(connection: Connection) -> None:
    """Refuse tables made before schema revisions that lack columns of the first revision, with
    the statements that add them."""
    inspector = inspect(connection)
    first = first_revision_columns()
    missing = []
    for table in model_metadata().sorted_tables:
        if table.name not in first or not inspector.has_table(table.name):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing += [(table.name, column) for column in table.columns
                    if column.name in first[table.name] and column.name not in present]
    if missing:
        statements = "; ".join(
            f"ALTER TABLE {table} ADD COLUMN {column.name} {column.type.compile(dialect=connection.dialect)}"
            for table, column in missing
        )
        raise ConfigurationError(
            f"the database at {_where(connection)} was made by an older certfleet: "
            f"{len(missing)} column{'s' if len(missing) != 1 else ''} missing. Add them ({statements}; "
            f"NOT NULL ones need a default for existing rows), then run `{UPGRADE_COMMAND}`; "
            "or start from a new database",
            code="database_schema_outdated",
        )


def _refuse(connection: Connection, state: SchemaState) -> None:
    if state.revision is None:
        check_columns(connection)
        raise ConfigurationError(
            f"the database at {_where(connection)} was made by a certfleet from before schema revisions: "
            f"run `{UPGRADE_COMMAND}` once, with CERTFLEET_DATABASE_URL naming this database, to record its "
            "revision, then start the services again",
            code="database_upgrade_required",
        )
    if state.revision not in revisions().known:
        raise _unknown(connection, state.revision)
    raise ConfigurationError(
        f"the database at {_where(connection)} is at schema revision {state.revision}, older than this "
        f"certfleet's {revisions().head}: run `{UPGRADE_COMMAND}` once, with CERTFLEET_DATABASE_URL naming this "
        "database, then start the services again",
        code="database_upgrade_required",
    )


def _unknown(connection: Connection, revision: str) -> ConfigurationError:
    return ConfigurationError(
        f"the database at {_where(connection)} is at schema revision {revision}, which this certfleet "
        f"does not know (its newest is {revisions().head}): a newer certfleet upgraded it; run that version",
        code="database_revision_unknown",
    )


def _lock(connection: Connection) -> None:
    """Hold off other processes changing the schema until this connection's transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # The driver opens no transaction for reads and DDL: take the write lock explicitly.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _where(connection: Connection) -> str:
    return connection.engine.url.render_as_string(hide_password=True)
