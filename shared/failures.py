"""How a certfleet command reports a failure: one line on stderr,

    error: <code>: <message>

and an exit status: 1 when the operation was refused or failed, 2 when the command line or
the configuration must change, 130 when the operator interrupted it. A command raises a
:class:`~shared.errors.CertfleetError` (ConfigurationError for exit 2); :func:`run` prints the
line and returns the status. This is the part every service's command shares; the
``certfleet`` command adds its own errors (API answers, unreachable controller) on top.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import CertfleetError, ConfigurationError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Failure:
    code: str
    message: str
    exit_status: int

    def line(self) -> str:
        return f"error: {self.code}: {self.message}"


def failure_of(exc: BaseException) -> Failure | None:
    """What the operator reads for ``exc``, and the exit status; None for an exception no
    command expects (a bug, whose traceback should show)."""
    if isinstance(exc, ConfigurationError):
        return Failure(exc.code, exc.message, EXIT_USAGE)
    if isinstance(exc, CertfleetError):
        return Failure(exc.code, exc.message, EXIT_FAILED)
    if isinstance(exc, TimeoutError):
        return Failure("timeout", str(exc) or "gave up waiting", EXIT_FAILED)
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", "stopped by the operator", EXIT_INTERRUPTED)
    if isinstance(exc, OSError):
        subject = f"{exc.filename}: " if exc.filename else ""
        return Failure("os_error", f"{subject}{exc.strerror or exc}", EXIT_FAILED)
    return None


def run(command: Callable[..., int | None], args,
        explain: Callable[[BaseException], Failure | None] = failure_of) -> int:
    """Run a command with the parsed ``args``; its exit status, or the failure's once printed.
    ``explain`` turns an exception into the failure to print (None: re-raise it)."""
    try:
        return int(command(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:
        failure = explain(exc)
        if failure is None:
            raise
        print(failure.line(), file=sys.stderr, flush=True)
        return failure.exit_status
