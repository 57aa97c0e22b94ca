"""``certfleet db upgrade``: bring the database's schema to this version's.

    CERTFLEET_DATABASE_URL=postgresql://certfleet@db:5432/certfleet certfleet db upgrade

Runs the schema revisions the database named by CERTFLEET_DATABASE_URL lacks and prints from
which revision to which; a database already there is left as it is. Run it once after
installing a newer certfleet, before starting its services: they refuse a database at an
older revision. An empty database gets every table; one made before certfleet kept schema
revisions is recorded at the newest once its tables have every column.

Exit status: 0 when the database is at the newest revision, 1 when a revision failed (its
changes are rolled back where the database allows), 2 when the settings or the database
cannot be used (the message says why).
"""

from __future__ import annotations

import argparse

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from services.cli.errors import CliError
from shared.errors import ConfigurationError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    sub.add_parser("upgrade", help="run the schema revisions the database lacks (CERTFLEET_DATABASE_URL)")


def main(args: argparse.Namespace) -> int:
    from shared.db import make_engine
    from shared.schema import upgrade_to_head
    from shared.settings import Settings

    engine = make_engine(Settings.from_env())
    where = engine.url.render_as_string(hide_password=True)
    try:
        try:
            with engine.connect():
                pass
        except OperationalError as exc:
            raise ConfigurationError(f"cannot connect to the database at {where}: {_first_line(exc)}",
                                     code="database_unreachable") from None
        try:
            upgrade = upgrade_to_head(engine)
        except SQLAlchemyError as exc:
            raise CliError("database_upgrade_failed", f"upgrading {where} failed: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    print(f"{where}: {upgrade.describe()}")
    return 0


def _first_line(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
