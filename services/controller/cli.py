"""``certfleet controller``, ``certfleet scheduler`` and ``certfleet token create``.

    certfleet controller --host 127.0.0.1 --port 8000 [--no-reconciler | --reconciler-only] [--no-scheduler]
                         [--insecure-dev-key]
    certfleet scheduler [--insecure-dev-key]
    certfleet token create --role admin|network_admin|read_only [--name NAME]

Both read the database and broker from the ``CERTFLEET_*`` environment. A refusal is a shared
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
    from shared.heap import freeze_startup_objects
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
    freeze_startup_objects()
    uvicorn.run(app, host=args.host, port=args.port, access_log=False,
                log_level=settings.log_level.lower(), lifespan="on")
    return 0


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
                        help="admin and network_admin may make changes; read_only may only read")
    parser.add_argument("--name", default="", help="what the token is for (shown in job history)")


def token_create(args: argparse.Namespace) -> int:
    """Create a token and print it: the only time it is shown."""
    from services.controller.api.auth import create_token
    from shared.db import init_db, make_engine, session_scope

    engine = make_engine(Settings.from_env())
    try:
        init_db(engine)
        with session_scope(engine) as session:
            token = create_token(session, role=Role(args.role), name=args.name)
            session.commit()
    finally:
        engine.dispose()
    print(token)
    return 0


if __name__ == "__main__":  # python -m services.controller.cli: the API server alone
    from shared.failures import run

    parser = argparse.ArgumentParser(prog="certfleet controller")
    add_arguments(parser)
    sys.exit(run(main, parser.parse_args()))
