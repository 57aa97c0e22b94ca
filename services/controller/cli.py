"""``certfleet controller``, ``certfleet scheduler`` and ``certfleet token create|list|revoke``.

    certfleet controller --host 127.0.0.1 --port 8000 [--no-reconciler | --reconciler-only] [--no-scheduler]
                         [--insecure-dev-key]
    certfleet scheduler [--insecure-dev-key]
    certfleet token create --role admin|network_admin|read_only [--name NAME] [--domain D] [--days N]
    certfleet token list
    certfleet token revoke ID

All read the database and broker from the ``CERTFLEET_*`` environment. The token commands record
what they change in the audit log, as done by the operating-system user who ran them. A refusal is a shared
error (:mod:`shared.failures` prints it): exit 2 for settings or a database that must change
first (e.g. ``certfleet db upgrade``), or for the development secret key (CERTFLEET_SECRET_KEY
unset), which only ``--insecure-dev-key`` allows.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from shared.enums import Role
from shared.settings import Settings, require_own_secret_key


def add_insecure_dev_key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--insecure-dev-key", action="store_true",
                        help="run without CERTFLEET_SECRET_KEY, with the public development key: a local trial "
                             "only, stored secrets are not protected")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-reconciler", action="store_true",
                      help="do not run the reconciler here (run it elsewhere)")
    mode.add_argument("--reconciler-only", action="store_true",
                      help="run the reconciler alone, without the API")
    parser.add_argument("--no-scheduler", action="store_true",
                        help="do not run the scheduler here (another controller or `certfleet scheduler` does)")
    add_insecure_dev_key_argument(parser)


def main(args: argparse.Namespace) -> int:
    from shared.heap import settle_heap
    from shared.logging import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    require_own_secret_key(settings, service="reconciler" if args.reconciler_only else "controller",
                           insecure_dev_key=args.insecure_dev_key)
    if args.reconciler_only:
        return _run_reconciler(settings)

    import uvicorn

    from services.controller.app import create_app

    app = create_app(settings, start_reconciler=not args.no_reconciler, start_scheduler=not args.no_scheduler)
    settle_heap()
    uvicorn.run(app, host=args.host, port=args.port, access_log=False,
                log_level=settings.log_level.lower(), lifespan="on", timeout_keep_alive=KEEP_ALIVE_SECONDS)
    return 0


#: How long the API keeps an idle connection open: longer than certfleet's own client keeps one
#: (``services.cli.api_client``), so that client never sends on a connection the server is closing.
KEEP_ALIVE_SECONDS = 30


def _run_alone(settings: Settings, start, describe, *, beside=None) -> int:
    """Run one periodic role without the API until SIGINT or SIGTERM: ``start(engine, broker)``
    starts it, ``describe(role)`` is the line printed once it runs; ``beside(engine)``, if given,
    starts more roles that run and stop with it."""
    from shared.broker import make_broker
    from shared.db import init_db, make_engine

    engine = make_engine(settings)
    init_db(engine)
    broker = make_broker(settings)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    others = beside(engine) if beside is not None else []
    role = start(engine, broker)
    print(describe(role), flush=True)
    done.wait()
    role.stop()
    for other in others:
        other.stop()
    broker.close()
    engine.dispose()
    return 0


def _run_reconciler(settings: Settings) -> int:
    from services.controller.queueing.reconciler import Reconciler

    return _run_alone(
        settings,
        lambda engine, broker: Reconciler(engine, broker, interval_seconds=settings.reconcile_interval_seconds,
                                          lease_seconds=settings.job_lease_seconds).start(),
        lambda _: f"reconciler running every {settings.reconcile_interval_seconds:g} s",
    )


def add_scheduler_arguments(parser: argparse.ArgumentParser) -> None:
    """``certfleet scheduler`` takes its settings from the environment."""
    add_insecure_dev_key_argument(parser)


def scheduler_main(args: argparse.Namespace) -> int:
    """Run the scheduler alone (no API): it leads when no other controller holds the lease. The
    alert relay runs beside it, leading under its own lease."""
    from services.controller.alerts.relay import AlertRelay
    from services.controller.scheduling.scheduler import Scheduler
    from shared.logging import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    require_own_secret_key(settings, service="scheduler", insecure_dev_key=args.insecure_dev_key)
    return _run_alone(
        settings, lambda engine, broker: Scheduler(engine, broker, settings).start(),
        lambda scheduler: f"scheduler running as {scheduler.holder}: {len(scheduler.specs)} schedules, "
                          f"lease {settings.scheduler_lease_seconds:g} s",
        beside=lambda engine: [AlertRelay(engine, settings).start()],
    )


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", required=True, choices=[r.value for r in Role],
                        help="admin manages domains, tokens and webhooks; network_admin devices, enrollment "
                             "objects and trustpoints; read_only only reads")
    parser.add_argument("--name", default="", help="what the token is for (shown in job history)")
    parser.add_argument("--domain", default=None,
                        help="its home domain, by id or name: it reaches that domain and those below it "
                             "(default Global: every domain)")
    parser.add_argument("--days", type=int, default=None,
                        help="days it is valid (default CERTFLEET_TOKEN_LIFETIME_DAYS, 90)")


def add_token_list_arguments(parser: argparse.ArgumentParser) -> None:
    """``certfleet token list`` takes no arguments: it lists every token."""


def add_token_revoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the token's id, as `certfleet token list` shows it")


def _with_session(work):
    """Run ``work(session, settings)`` on the database the environment names, and commit."""
    from shared.db import init_db, make_engine, session_scope

    settings = Settings.from_env()
    engine = make_engine(settings)
    try:
        init_db(engine)
        with session_scope(engine) as session:
            result = work(session, settings)
            session.commit()
    finally:
        engine.dispose()
    return result


def _home_domain(session, ref: str | None):
    """The domain ``--domain`` names (by id or unique name); Global when none is named."""
    import uuid

    from sqlmodel import select

    from services.controller.api.deps import load_scope
    from shared.errors import ValidationError
    from shared.models import GLOBAL_DOMAIN_ID, Domain

    if ref is None:
        return load_scope(session, GLOBAL_DOMAIN_ID)
    try:
        return load_scope(session, uuid.UUID(ref))
    except ValueError:
        pass
    matches = session.exec(select(Domain.id).where(Domain.name == ref)).all()
    if len(matches) != 1:
        why = "no domain" if not matches else f"{len(matches)} domains"
        raise ValidationError(f"{why} named {ref!r}; name the domain by its id", code="unknown_domain")
    return load_scope(session, matches[0])


def token_create(args: argparse.Namespace) -> int:
    """Create a token and print it: the only time it is shown. Works on the database directly, so
    the first admin token needs no API."""
    from datetime import timedelta

    from services.controller.audit.commands import record_command
    from services.controller.crud.tokens import issue_token
    from shared.clock import utcnow
    from shared.errors import ValidationError
    from shared.settings import MAX_TOKEN_LIFETIME_DAYS

    if args.days is not None and not 1 <= args.days <= MAX_TOKEN_LIFETIME_DAYS:
        raise ValidationError(f"--days must be between 1 and {MAX_TOKEN_LIFETIME_DAYS}", code="invalid_lifetime")

    def create(session, settings):
        now = utcnow()
        token, row = issue_token(session, role=Role(args.role), name=args.name,
                                 home=_home_domain(session, args.domain),
                                 lifetime=timedelta(days=args.days or settings.token_lifetime_days), now=now,
                                 issuer=None)
        record_command(session, action="token_create", domain_id=row.domain_id, target_id=row.id,
                       details={"role": row.role, "name": row.name}, now=now)
        return token

    print(_with_session(create))
    return 0


def token_list(args: argparse.Namespace) -> int:
    """Every token, newest first: id, state, role, home domain, expiry, last use and name (never the token)."""
    from sqlmodel import select

    from services.controller.crud.tokens import list_tokens, state_of
    from shared.clock import utcnow
    from shared.models import Domain

    def rows(session, settings):
        tokens, _ = list_tokens(session, reach=None, offset=0, limit=1_000_000)
        names = {d.id: d.name for d in session.exec(select(Domain)).all()}
        now = utcnow()
        return [(str(t.id), state_of(t, now=now), t.role, names.get(t.domain_id, str(t.domain_id)),
                 f"{t.expires_at:%Y-%m-%d %H:%M}", f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never",
                 t.name) for t in tokens]

    lines = _with_session(rows)
    header = ("ID", "STATE", "ROLE", "DOMAIN", "EXPIRES (UTC)", "LAST USED", "NAME")
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    for row in [header, *lines]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    """Revoke a token: it is refused from its next request on, by every controller."""
    import uuid

    from services.controller.audit.commands import record_command
    from services.controller.crud.tokens import revoke_token
    from shared.clock import utcnow
    from shared.errors import ValidationError

    try:
        token_id = uuid.UUID(args.id)
    except ValueError:
        raise ValidationError(f"{args.id!r} is not a token id; `certfleet token list` shows them",
                              code="invalid_token_id") from None
    def revoke(session, settings):
        now = utcnow()
        row = revoke_token(session, token_id=token_id, reach=None, now=now)
        record_command(session, action="token_revoke", domain_id=row.domain_id, target_id=row.id, now=now)
        return row

    row = _with_session(revoke)
    print(f"token {row.id} ({row.name or 'unnamed'}) revoked")
    return 0


if __name__ == "__main__":  # python -m services.controller.cli: the API server alone
    from shared.failures import run

    parser = argparse.ArgumentParser(prog="certfleet controller")
    add_arguments(parser)
    sys.exit(run(main, parser.parse_args()))
