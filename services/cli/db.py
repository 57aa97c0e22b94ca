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

from services.cli.errors import CliError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    sub.add_parser("upgrade", help="run the schema revisions the database lacks (CERTFLEET_DATABASE_URL)")


def main(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from shared.db import make_engine
    from shared.schema import connect, reason, upgrade_to_head
    from shared.settings import Settings

    engine = make_engine(Settings.from_env())
    where = engine.url.render_as_string(hide_password=True)
    try:
        connect(engine).close()  # database_unreachable (exit 2) before anything else
        try:
            upgrade = upgrade_to_head(engine)
        except SQLAlchemyError as exc:
            raise CliError("database_upgrade_failed", f"upgrading {where} failed: {reason(exc)}") from None
    finally:
        engine.dispose()
    print(f"{where}: {upgrade.describe()}")
    return 0
