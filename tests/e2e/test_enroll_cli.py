"""``certfleet enroll`` as an operator runs it: a subprocess talking to a running stack (the
embedded one: API, worker threads and device simulator in this test's process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest

from services.cli.api_client import CertfleetClient
from services.stack.embedded import EmbeddedStack
from shared.settings import Settings
from tests.support.procs import ROOT, free_port

#: No CERTFLEET_* from the caller's environment: the command gets its URL and token as arguments.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
#: One in five devices of this seed is unreachable; two attempts, quickly, then it fails.
FAULTY = {"unreachable_rate": 0.2}
QUICK = Settings(job_max_attempts=2, retry_backoff_ms=20, retry_backoff_max_ms=50,
                 reconcile_interval_seconds=1)


def certfleet_enroll(stack: EmbeddedStack, *args: str, terminal: bool = False) -> subprocess.CompletedProcess:
    """The command as a subprocess; ``terminal``: rich draws as on an operator's terminal (a live
    bar redrawn in place), and the output comes back with its escape sequences removed."""
    env = {**CLEAN_ENV, "COLUMNS": "160"}
    if terminal:
        env |= {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "enroll", "--api-url", stack.api_url, "--token",
         stack.admin_token, "--interval", "0.1", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    done.stdout = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stdout)
    return done


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with EmbeddedStack(QUICK, devices=40, worker_threads=8, sim_options=FAULTY,
                       state_dir=tmp_path_factory.mktemp("enroll-cli")) as s:
        with CertfleetClient(s.api_url, s.admin_token) as client:
            client.import_devices(s.sim.url)
            for name in ("vpn-all", "vpn-some", "vpn-pattern"):
                client.create_enrollment_object(name=name, enrollment_type="self_signed", key_type="ecdsa",
                                                key_size=256)
            s.devices_by_name = {d["name"]: d for d in client.devices()}
        faults = s.sim.sim.faults
        s.reachable = [d for d in s.devices_by_name.values() if not faults.is_unreachable(d["serial"])]
        s.unreachable = [d for d in s.devices_by_name.values() if faults.is_unreachable(d["serial"])]
        assert s.reachable and s.unreachable
        yield s


def test_every_device_shows_progress_and_a_summary_with_failures_by_code(stack):
    done = certfleet_enroll(stack, "--object", "vpn-all", "--all", terminal=True)
    out = done.stdout
    failed = len(stack.unreachable)
    assert done.returncode == 1, out + done.stderr  # some devices are unreachable
    assert done.stderr == (f"error: devices_failed: {failed} of 40 devices failed to enroll "
                           "(failures by error code above)\n")
    assert "started bulk enrollment" in out and "on 40 devices" in out
    assert "enrolling" in out and "40/40" in out  # the bar, at its end
    # ... and on its way there: redrawn live as devices finish, not only once at the end.
    shown = {int(n) for n in re.findall(r"enrolling.*?(\d+)/40", out)}
    assert len(shown) >= 3 and min(shown) < 40, sorted(shown)
    assert f"{40 - failed} succeeded, {failed} failed of 40" in out
    assert "failures by error code" in out
    row = next(line for line in out.splitlines() if "│ device_unreachable" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")][:2] == ["device_unreachable", str(failed)]
    # The example message names the device, so the operator knows where to look.
    assert any(d["serial"] in out for d in stack.unreachable)


def test_devices_by_name_serial_and_id_all_enroll(stack):
    first, second, third = stack.reachable[:3]
    done = certfleet_enroll(stack, "--object", "vpn-some", "--device", first["name"], second["serial"],
                            "--device", third["id"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 succeeded, 0 failed of 3" in done.stdout
    assert "failures by error code" not in done.stdout


def test_a_name_pattern_selects_devices_and_a_second_run_skips_them(stack):
    name = stack.reachable[0]["name"]
    pattern = name[:-1] + "?"  # the device and its neighbours by name
    matching = [n for n in stack.devices_by_name if n[:-1] == name[:-1]]
    done = certfleet_enroll(stack, "--object", "vpn-pattern", "--name-pattern", pattern, "--no-wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"on {len(matching)} devices" in done.stdout
    again = certfleet_enroll(stack, "--object", "vpn-pattern", "--name-pattern", pattern)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 succeeded, 0 failed of 0" in again.stdout
    assert f"{len(matching)} skipped (they already had it)" in again.stdout


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--object", "no-such-object", "--all"], "unknown_enrollment_object",
     "no enrollment object named 'no-such-object'"),
    (["--object", "vpn-all", "--device", "nowhere"], "unknown_device",
     "no device with the id, name or serial 'nowhere'"),
    (["--object", "vpn-all", "--device", str(uuid.UUID(int=7))], "unknown_device", str(uuid.UUID(int=7))),
    (["--object", "vpn-all", "--model", "no-such-model"], "empty_selection", ""),
    (["--object", "vpn-all", "--all", "--domain", "Nowhere"], "unknown_domain", "no domain named 'Nowhere'"),
])
def test_a_refused_request_says_why_and_exits_1(stack, args, code, message):
    done = certfleet_enroll(stack, *args)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: {code}: ") and message in done.stderr, done.stderr
    assert "started bulk enrollment" not in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--object", "vpn-all"], "choose the devices with exactly one of --all"),
    (["--object", "vpn-all", "--all", "--model", "FTDv"], "(given: --all, --name-pattern/--model)"),
])
def test_a_bad_selection_is_a_usage_error_exit_2(stack, args, message):
    done = certfleet_enroll(stack, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: bad_selection: ") and message in done.stderr, done.stderr


def test_without_a_token_it_says_how_to_get_one(stack):
    done = subprocess.run([sys.executable, "-m", "services.cli", "enroll", "--api-url", stack.api_url,
                           "--object", "vpn-all", "--all"],
                          cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: no_token: ") and "certfleet token create" in done.stderr


def test_an_unreachable_controller_is_said_so_without_a_traceback():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "services.cli", "enroll", "--api-url", url, "--token", "t",
                           "--object", "vpn-all", "--all"],
                          cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: api_unreachable: cannot reach the API at {url}: ")
    assert "Traceback" not in done.stderr
