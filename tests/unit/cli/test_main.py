"""The ``certfleet`` command's wiring: each subcommand reaches its module, and every one of them
fails the same way (``error: <code>: <message>``, exit 1 or 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.cli import bulk, demo, devices, enroll, up
from services.cli.main import build_parser, main
from services.controller import cli as controller_cli
from tests.support.procs import ROOT, free_port


@pytest.mark.parametrize(("argv", "runs"), [
    (["demo"], demo.main),
    (["up"], up.main),
    (["enroll", "--object", "vpn", "--all"], enroll.main),
    (["re-enroll", "--object", "vpn", "--all", "--expiring-within", "30d"], bulk.re_enroll),
    (["refresh", "--object", "vpn", "--model", "FTDv", "--status", "failed"], bulk.refresh),
    (["delete", "--object", "vpn", "--device", "edge-1", "--yes"], bulk.delete),
    (["weak-crypto", "enable", "--all", "--yes"], bulk.weak_crypto_enable),
    (["weak-crypto", "disable", "--name-pattern", "edge-*"], bulk.weak_crypto_disable),
    (["devices", "import", "--from-sim", "http://127.0.0.1:8400"], devices.import_devices),
    (["controller"], controller_cli.main),
    (["token", "create", "--role", "admin"], controller_cli.token_create),
])
def test_each_subcommand_runs_its_module(argv, runs):
    assert build_parser().parse_args(argv).func is runs


@pytest.mark.parametrize("argv", [
    ["trustpoint", "show", "edge", "vpn"], ["enroll", "--object", "vpn", "--all"],
    ["devices", "import", "--from-sim", "http://127.0.0.1:8400"], ["device", "weak-crypto", "edge", "--disable"],
    ["re-enroll", "--object", "vpn", "--all"], ["weak-crypto", "enable", "--all"],
])
def test_without_a_token_every_api_command_is_a_configuration_error(argv, capsys, monkeypatch):
    monkeypatch.delenv("CERTFLEET_TOKEN", raising=False)
    assert main([*argv, "--token", ""]) == 2
    assert capsys.readouterr().err.startswith("error: no_token: no API token: pass --token or set CERTFLEET_TOKEN")


@pytest.mark.parametrize("argv", [
    ["trustpoint", "show", "edge", "vpn"], ["enroll", "--object", "vpn", "--all"],
    ["devices", "import", "--from-sim", "http://127.0.0.1:8400"],
])
def test_an_api_nobody_answers_at_is_the_same_failure_for_every_command(argv, capsys):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main([*argv, "--api-url", url, "--token", "t"]) == 1
    assert capsys.readouterr().err.startswith(f"error: api_unreachable: cannot reach the API at {url}: ")


@pytest.mark.parametrize("argv", [
    ["enroll", "--object", "vpn"], ["delete", "--object", "vpn", "--yes"], ["weak-crypto", "disable"],
    ["refresh", "--object", "vpn", "--all", "--model", "FTDv"],
])
def test_choosing_no_devices_or_two_ways_is_a_usage_error(argv, capsys):
    assert main([*argv, "--token", "t"]) == 2
    assert "error: bad_selection: choose the devices with exactly one of --all" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["30x", "-1", "d", "1.5d"])
def test_expiring_within_takes_days(value, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["re-enroll", "--object", "vpn", "--all", "--expiring-within", value, "--token", "t"])
    assert exited.value.code == 2
    assert "is not a number of days, e.g. 30d" in capsys.readouterr().err


def test_building_the_parser_loads_no_command_s_implementation():
    # In a fresh interpreter: this one has loaded everything already.
    heavy = ["sqlalchemy", "sqlmodel", "alembic", "httpx", "dramatiq", "redis", "fastapi", "uvicorn", "aiohttp",
             "rich", "structlog"]
    script = ("import sys\nfrom services.cli.main import build_parser\nbuild_parser()\n"
              f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
