"""A database made by a certfleet from before schema revisions, whose tables lack a column this
version has, is refused at start-up with a code and the statements that fix it, instead of
failing requests and jobs later; the controller command says so and exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlmodel import SQLModel

from shared.db import init_db, make_engine
from shared.errors import ConfigurationError
from shared.schema import FIRST_REVISION, VERSION_TABLE, alembic_config, upgrade_to_head
from shared.settings import Settings
from tests.support.procs import with_test_key

ROOT = Path(__file__).resolve().parents[3]


def drop_column(engine, table: str, column: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))


def made_before_revisions(engine) -> None:
    """What a certfleet from before schema revisions left: the first revision's tables and no
    recorded revision."""
    SQLModel.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    with engine.connect() as conn:
        command.upgrade(alembic_config(conn), FIRST_REVISION)
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
        conn.commit()


@pytest.mark.parametrize("db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_table_missing_a_column_is_refused_with_the_statement_that_adds_it(db_engine):
    made_before_revisions(db_engine)
    drop_column(db_engine, "job", "ca_waits")
    with pytest.raises(ConfigurationError) as refused:
        init_db(db_engine)
    assert refused.value.code == "database_schema_outdated"
    message = str(refused.value)
    assert "made by an older certfleet: 1 column missing" in message
    assert "ALTER TABLE job ADD COLUMN ca_waits INTEGER" in message
    assert "then run `certfleet db upgrade`" in message

    # What the message says to do is enough.
    with db_engine.begin() as conn:
        conn.execute(text("ALTER TABLE job ADD COLUMN ca_waits INTEGER NOT NULL DEFAULT 0"))
    upgrade_to_head(db_engine)  # what certfleet db upgrade runs
    init_db(db_engine)


def test_the_controller_command_refuses_an_outdated_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(Settings(database_url=url))
    SQLModel.metadata.create_all(engine)  # as certfleet did before it kept schema revisions
    drop_column(engine, "trustpoint", "csr_pem")
    engine.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "controller", "--port", "0"], cwd=ROOT, capture_output=True,
        text=True, timeout=60,
        env=with_test_key({**os.environ, "CERTFLEET_DATABASE_URL": url, "CERTFLEET_BROKER_URL": ""}),
    )
    assert done.returncode == 2, done.stderr
    assert "error: database_schema_outdated:" in done.stderr
    assert "ALTER TABLE trustpoint ADD COLUMN csr_pem" in done.stderr
    assert "Traceback" not in done.stderr
