"""One error convention for every ``certfleet`` command: what each failure prints and the exit
status it gets (1 refused or failed, 2 usage or configuration, 130 interrupted)."""

from __future__ import annotations

import argparse
import errno

import httpx
import pytest

from services.cli.api_client import ApiError
from services.cli.errors import CliError, Interrupted, UsageError, failure_of, run
from shared.errors import ConfigurationError, NotFoundError, PermanentError

API = "http://127.0.0.1:8000"


@pytest.mark.parametrize(("exc", "code", "status"), [
    (CliError("unknown_device", "no device 'x'"), "unknown_device", 1),
    (UsageError("no_token", "no API token"), "no_token", 2),
    (Interrupted("interrupted", "stopped following"), "interrupted", 130),
    (ApiError(409, "job_in_progress", "a job is running"), "job_in_progress", 1),
    (ApiError(401, "unauthorized", "bad token"), "unauthorized", 1),
    (ConfigurationError("database is too old", code="database_schema_outdated"), "database_schema_outdated", 2),
    (NotFoundError("no such trustpoint"), "not_found", 1),
    (PermanentError("the CA refused", code="ca_rejected"), "ca_rejected", 1),
    (httpx.ConnectError("[Errno 111] Connection refused"), "api_unreachable", 1),
    (httpx.ReadTimeout("timed out"), "api_timeout", 1),
    (TimeoutError("job j is still running after 120 s"), "timeout", 1),
    (KeyboardInterrupt(), "interrupted", 130),
    (PermissionError(errno.EACCES, "Permission denied", "/etc/out.p12"), "os_error", 1),
])
def test_each_failure_has_a_stable_code_and_exit_status(exc, code, status):
    failure = failure_of(exc, api_url=API)
    assert (failure.code, failure.exit_status) == (code, status)
    assert failure.message


def test_messages_say_what_went_wrong_and_where():
    assert failure_of(ApiError(422, "empty_selection", "no device matches"), api_url=API).line() == (
        "error: empty_selection: no device matches")
    unreachable = failure_of(httpx.ConnectError("[Errno 111] Connection refused"), api_url=API)
    assert f"cannot reach the API at {API}: [Errno 111] Connection refused" in unreachable.message
    assert "--api-url" in unreachable.message
    denied = failure_of(PermissionError(errno.EACCES, "Permission denied", "/etc/out.p12"))
    assert denied.message == "/etc/out.p12: Permission denied"
    assert failure_of(ApiError(502, "error", ""), api_url=API).message == "the API answered HTTP 502"


def test_a_bug_is_not_dressed_up_as_an_operator_error():
    assert failure_of(KeyError("id")) is None
    with pytest.raises(KeyError):
        run(lambda args: {}["id"], argparse.Namespace())


def test_run_prints_one_line_on_stderr_and_returns_the_status(capsys):
    def refused(args):
        raise ApiError(409, "job_in_progress", "trustpoint vpn already has a job running")

    assert run(refused, argparse.Namespace(api_url=API)) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: job_in_progress: trustpoint vpn already has a job running\n"
    assert captured.out == ""


def test_run_names_the_command_line_api_url_when_it_cannot_be_reached(capsys):
    def unreachable(args):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    assert run(unreachable, argparse.Namespace(api_url="http://10.0.0.9:8000")) == 1
    assert capsys.readouterr().err.startswith("error: api_unreachable: cannot reach the API at http://10.0.0.9:8000")


def test_run_passes_on_a_command_s_own_status():
    assert run(lambda args: None, argparse.Namespace()) == 0
    assert run(lambda args: 3, argparse.Namespace()) == 3
