"""``certfleet secrets rotate``: re-encrypt every stored secret under a new secret key.

    certfleet secrets rotate --old-key-file OLD --new-key-file NEW
    CERTFLEET_SECRET_KEY=… CERTFLEET_NEW_SECRET_KEY=… certfleet secrets rotate

The old key is ``--old-key-file``, ``--old-key``, ``--from-development-key`` (an installation
that ran on the development key) or, by default, CERTFLEET_SECRET_KEY, the key the services run
with; the new key is ``--new-key-file``, ``--new-key`` or CERTFLEET_NEW_SECRET_KEY. A key file
holds the key alone (a trailing newline is ignored); ``-`` reads it from standard input. A key
given as ``--old-key``/``--new-key`` is visible to every user of the host in the process list:
prefer the files or the environment.

Stop every controller, worker and scheduler first: one still running on the old key could not
read what was rotated, and would store new secrets under the old key. Everything is re-encrypted
in one transaction; a secret that opens with neither key refuses the rotation before anything is
written (exit 2, ``secret_key_mismatch``, naming its row). Running it again with the same keys is
safe: secrets already under the new key are left as they are. Then start the services with
CERTFLEET_SECRET_KEY set to the new key. The rotation is recorded in the audit log (at Global), in
the same transaction, as done by the operating-system user who ran it, with its counts; never a key.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from services.cli.errors import CliError, UsageError

NEW_KEY_ENV = "CERTFLEET_NEW_SECRET_KEY"


def add_rotate_arguments(rotate: argparse.ArgumentParser) -> None:
    old = rotate.add_mutually_exclusive_group()
    old.add_argument("--old-key-file", metavar="FILE", help="file holding the current key (- for standard input)")
    old.add_argument("--old-key", metavar="KEY", help="the current key (visible in the process list: prefer "
                                                      "--old-key-file or CERTFLEET_SECRET_KEY)")
    old.add_argument("--from-development-key", action="store_true",
                     help="the secrets were stored with the development key (CERTFLEET_SECRET_KEY was unset)")
    new = rotate.add_mutually_exclusive_group()
    new.add_argument("--new-key-file", metavar="FILE", help="file holding the new key (- for standard input)")
    new.add_argument("--new-key", metavar="KEY", help=f"the new key (visible in the process list: prefer "
                                                      f"--new-key-file or {NEW_KEY_ENV})")


def rotate_command(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from services.controller.audit.commands import record_command
    from shared.db import make_engine, session_scope
    from shared.domains import GLOBAL_DOMAIN_ID
    from shared.schema import check_current, reason
    from shared.secret_rotation import rotate_secrets
    from shared.secrets import SecretBox
    from shared.settings import Settings

    old_key, new_key = chosen_keys(args, os.environ)
    settings = Settings.from_env()
    engine = make_engine(settings)
    try:
        check_current(engine)  # an older schema may keep secrets elsewhere: upgrade it first
        with session_scope(engine) as session:
            try:
                report = rotate_secrets(session, SecretBox(old_key), SecretBox(new_key))
                record_command(session, action="secrets_rotate", domain_id=GLOBAL_DOMAIN_ID,
                               details={"rotated": sum(report.rotated.values()),
                                        "already": sum(report.already.values())})
                session.commit()
            except SQLAlchemyError as exc:
                raise CliError("database_error", f"the rotation failed and was rolled back: {reason(exc)}") from None
    finally:
        engine.dispose()
    print(report.describe())
    print("Start the controllers, workers and schedulers with CERTFLEET_SECRET_KEY set to the new key.")
    return 0


def chosen_keys(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str]:
    """The old and the new key, from the options or the environment; UsageError (exit 2) when
    one is missing or empty, when they are the same, or when the new one is the development key."""
    from shared.settings import DEVELOPMENT_SECRET_KEY, MAKE_A_KEY

    if args.from_development_key:
        old = DEVELOPMENT_SECRET_KEY
    else:
        old = _key(args.old_key, args.old_key_file, env.get("CERTFLEET_SECRET_KEY"))
    new = _key(args.new_key, args.new_key_file, env.get(NEW_KEY_ENV))
    if old is None:
        raise UsageError("old_key_missing", "which key are the secrets stored with? Give --old-key-file FILE, "
                                            "set CERTFLEET_SECRET_KEY, or --from-development-key")
    if new is None:
        raise UsageError("new_key_missing", f"no new key: give --new-key-file FILE or set {NEW_KEY_ENV}; make "
                                            f"one with {MAKE_A_KEY.replace('CERTFLEET_SECRET_KEY', NEW_KEY_ENV)}")
    if new == DEVELOPMENT_SECRET_KEY:
        raise UsageError("development_secret_key", "the new key is the public development key: it would "
                                                   f"protect nothing; make one with {MAKE_A_KEY}")
    if new == old:
        raise UsageError("same_secret_key", "the new key is the old one: nothing to rotate")
    return old, new


def _key(value: str | None, path: str | None, from_env: str | None) -> str | None:
    if path is not None:
        value = _read_key(path)
    elif value is None:
        value = from_env
    if value is not None and not value:
        where = "standard input" if path == "-" else path or "the key given"
        raise UsageError("empty_secret_key", f"{where} holds an empty key")
    return value


def _read_key(path: str) -> str:
    if path == "-":
        return sys.stdin.readline().rstrip("\r\n")
    with open(path, encoding="utf-8") as f:  # an OSError is reported as os_error, naming the file
        return f.read().rstrip("\r\n")
