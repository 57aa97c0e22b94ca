"""How every ``certfleet`` command reports a failure: one line on stderr,

    error: <code>: <message>

and an exit status: 1 when the operation was refused or failed, 2 when the command line or
the configuration must change (argparse's own usage errors exit 2 as well), 130 when the
operator interrupted it. Commands raise; :func:`run` prints and picks the status, so no
command prints its own errors.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from services.cli.api_client import ApiError
from shared.errors import CertfleetError, ConfigurationError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """The operation was refused or failed: exit 1."""

    exit_status = EXIT_FAILED

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class UsageError(CliError):
    """The command line or the configuration must change before the command can run: exit 2."""

    exit_status = EXIT_USAGE


class Interrupted(CliError):
    """The operator stopped the command (Ctrl-C): exit 130."""

    exit_status = EXIT_INTERRUPTED


@dataclass(frozen=True)
class Failure:
    code: str
    message: str
    exit_status: int

    def line(self) -> str:
        return f"error: {self.code}: {self.message}"


def failure_of(exc: BaseException, *, api_url: str | None = None) -> Failure | None:
    """What the operator reads for ``exc``, and the exit status; None for an exception no
    command expects (a bug, whose traceback should show). ``api_url``: the controller the
    command talked to, named when it cannot be reached."""
    where = f"the API at {api_url}" if api_url else "the API"
    if isinstance(exc, CliError):
        return Failure(exc.code, exc.message, exc.exit_status)
    if isinstance(exc, ApiError):
        return Failure(exc.code, exc.detail or f"the API answered HTTP {exc.status}", EXIT_FAILED)
    if isinstance(exc, ConfigurationError):
        return Failure(exc.code, exc.message, EXIT_USAGE)
    if isinstance(exc, CertfleetError):
        return Failure(exc.code, exc.message, EXIT_FAILED)
    if isinstance(exc, httpx.TimeoutException):
        return Failure("api_timeout", f"{where} did not answer in time ({type(exc).__name__}); "
                                      "is the controller overloaded or stopped?", EXIT_FAILED)
    if isinstance(exc, httpx.TransportError):
        reason = str(exc) or type(exc).__name__
        return Failure("api_unreachable", f"cannot reach {where}: {reason}; is the controller running "
                                          "there (--api-url or CERTFLEET_API_URL)?", EXIT_FAILED)
    if isinstance(exc, TimeoutError):
        return Failure("timeout", str(exc) or "gave up waiting", EXIT_FAILED)
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", "stopped by the operator", EXIT_INTERRUPTED)
    if isinstance(exc, OSError):
        subject = f"{exc.filename}: " if exc.filename else ""
        return Failure("os_error", f"{subject}{exc.strerror or exc}", EXIT_FAILED)
    return None


def run(command: Callable[..., int | None], args) -> int:
    """Run a command with the parsed ``args``; its exit status, or the failure's once printed."""
    try:
        return int(command(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:
        failure = failure_of(exc, api_url=getattr(args, "api_url", None))
        if failure is None:
            raise
        print(failure.line(), file=sys.stderr, flush=True)
        return failure.exit_status
