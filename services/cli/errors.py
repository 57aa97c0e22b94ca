"""How every ``certfleet`` command reports a failure: one line on stderr,

    error: <code>: <message>

and an exit status: 1 when the operation was refused or failed, 2 when the command line or
the configuration must change (argparse's own usage errors exit 2 as well), 130 when the
operator interrupted it. Commands raise; :func:`run` prints and picks the status, so no
command prints its own errors. The shared errors (:mod:`shared.errors`), timeouts, interrupts
and OS errors are reported as every service's own command reports them (:mod:`shared.failures`);
this module adds the ``certfleet`` command's: its own refusals and the controller's answers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from shared import failures
from shared.failures import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Failure

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "ApiError", "CliError", "Failure", "Interrupted",
           "UsageError", "failure_of", "run"]


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


class ApiError(Exception):
    """The controller's API answered with a problem: its HTTP status, stable code and detail, and
    the problem's other members (``extra``), such as how many devices a refused action would touch."""

    def __init__(self, status: int, code: str, detail: str, *, extra: dict | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail
        self.extra = extra or {}


def failure_of(exc: BaseException, *, api_url: str | None = None) -> Failure | None:
    """What the operator reads for ``exc``, and the exit status; None for an exception no
    command expects (a bug, whose traceback should show). ``api_url``: the controller the
    command talked to, named when it cannot be reached."""
    where = f"the API at {api_url}" if api_url else "the API"
    if isinstance(exc, CliError):
        return Failure(exc.code, exc.message, exc.exit_status)
    if isinstance(exc, ApiError):
        return Failure(exc.code, exc.detail or f"the API answered HTTP {exc.status}", EXIT_FAILED)
    # Only a command that imported httpx can fail with its errors; looking it up instead of
    # importing it keeps the commands that never talk to the API from loading it.
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.TimeoutException):
        return Failure("api_timeout", f"{where} did not answer in time ({type(exc).__name__}); "
                                      "is the controller overloaded or stopped?", EXIT_FAILED)
    if httpx is not None and isinstance(exc, httpx.TransportError):
        reason = str(exc) or type(exc).__name__
        return Failure("api_unreachable", f"cannot reach {where}: {reason}; is the controller running "
                                          "there (--api-url or CERTFLEET_API_URL)?", EXIT_FAILED)
    return failures.failure_of(exc)


def run(command: Callable[..., int | None], args) -> int:
    """Run a command with the parsed ``args``; its exit status, or the failure's once printed."""
    api_url = getattr(args, "api_url", None)
    return failures.run(command, args, explain=lambda exc: failure_of(exc, api_url=api_url))
