"""``certfleet re-enroll|refresh|delete`` and ``certfleet weak-crypto`` as an operator runs them: the
command as a subprocess against the embedded stack (API, worker threads and device simulator in
this test's process), and once in process to answer its confirmation prompt."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from services.cli.api_client import ApiError, CertfleetClient
from services.cli.main import main
from services.stack.embedded import EmbeddedStack
from shared.settings import Settings
from tests.support.procs import ROOT

#: No CERTFLEET_* from the caller's environment: the command gets its URL and token as arguments.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
DEVICES = 10


def certfleet(stack: EmbeddedStack, *args: str, terminal: bool = False) -> subprocess.CompletedProcess:
    """The command as a subprocess with no terminal to ask at; ``terminal``: rich draws its live bar as
    on an operator's terminal (escape sequences removed from the output)."""
    env = {**CLEAN_ENV, "COLUMNS": "160"}
    if terminal:
        env |= {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    done = subprocess.run([sys.executable, "-m", "services.cli", *args, "--api-url", stack.api_url, "--token",
                           stack.admin_token], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)
    done.stdout = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stdout)
    return done


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with EmbeddedStack(Settings(log_level="WARNING"), devices=DEVICES, worker_threads=4,
                       state_dir=tmp_path_factory.mktemp("bulk-cli")) as s:
        s.client = CertfleetClient(s.api_url, s.admin_token)
        s.client.import_devices(s.sim.url)
        s.fleet = sorted(s.client.devices(), key=lambda d: d["name"])
        yield s
        s.client.close()


def enrolled(stack, name: str) -> dict:
    """A self-signed object (365-day certificates) enrolled on every device."""
    obj = stack.client.create_enrollment_object(name=name, enrollment_type="self_signed", key_type="ecdsa",
                                                key_size=256)
    batch = stack.client.start_bulk_enrollment(obj["id"])
    deadline = time.monotonic() + 60
    while not batch["finished"]:
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)
        batch = stack.client.bulk_enrollment(batch["id"])
    assert batch["succeeded"] == DEVICES, batch
    return obj


def fingerprints(stack, name: str) -> dict[str, str]:
    return {d["id"]: stack.client.trustpoint(d["id"], name)["identity_certificate"]["fingerprint_sha256"]
            for d in stack.fleet}


def test_re_enroll_what_expires_with_a_live_bar_then_refresh_the_available(stack):
    enrolled(stack, "bulk-renew")
    before = fingerprints(stack, "bulk-renew")
    nothing = certfleet(stack, "re-enroll", "--object", "bulk-renew", "--all", "--expiring-within", "30d")
    assert nothing.returncode == 1, nothing.stdout + nothing.stderr
    assert nothing.stderr.startswith("error: empty_selection: ") and "ending within 30 days" in nothing.stderr

    done = certfleet(stack, "re-enroll", "--object", "bulk-renew", "--all", "--expiring-within", "400d",
                     "--interval", "0.05", terminal=True)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "started bulk re-enroll" in out and f"trustpoint bulk-renew on {DEVICES} devices" in out
    assert "re-enrolling" in out and f"{DEVICES}/{DEVICES}" in out
    assert f"{DEVICES} succeeded, 0 failed of {DEVICES}" in out and "0 skipped (busy with another job)" in out
    after = fingerprints(stack, "bulk-renew")
    assert all(after[k] != before[k] for k in before)  # a new certificate on every device

    first = stack.fleet[0]["name"]
    done = certfleet(stack, "refresh", "--object", "bulk-renew", "--name-pattern", first, "--status", "available")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 succeeded, 0 failed of 1" in done.stdout


def test_delete_without_a_terminal_needs_yes(stack):
    enrolled(stack, "bulk-gone")
    chosen = stack.fleet[:2]
    devices = ["--device", chosen[0]["name"], chosen[1]["serial"]]
    refused = certfleet(stack, "delete", "--object", "bulk-gone", *devices)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr == ("error: confirmation_required: This deletes trustpoint bulk-gone and its certificates "
                              "from 2 devices, on the devices and in certfleet. Confirm at a terminal, or pass "
                              "--yes.\n")
    assert stack.client.trustpoint(chosen[0]["id"], "bulk-gone")["identity_status"] == "available"

    done = certfleet(stack, "delete", "--object", "bulk-gone", *devices, "--yes", "--interval", "0.05")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 succeeded, 0 failed of 2" in done.stdout
    for device in chosen:
        with pytest.raises(ApiError) as gone:
            stack.client.trustpoint(device["id"], "bulk-gone")
        assert gone.value.status == 404
    assert len(stack.client.trustpoints(identity_status="available")) >= DEVICES - 2


def test_delete_asks_at_the_terminal(stack, monkeypatch, capsys):
    enrolled(stack, "bulk-asked")
    answers = iter(["n", "y"])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    argv = ["delete", "--object", "bulk-asked", "--all", "--api-url", stack.api_url, "--token", stack.admin_token,
            "--interval", "0.05"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert f"from {DEVICES} devices" in out and err.startswith("error: not_confirmed: nothing done")
    assert stack.client.trustpoint(stack.fleet[0]["id"], "bulk-asked")["identity_status"] == "available"
    assert main(argv) == 0
    assert f"{DEVICES} succeeded, 0 failed of {DEVICES}" in capsys.readouterr().out
    assert not [t for t in stack.client.trustpoints() if t["name"] == "bulk-asked"]


def test_weak_crypto_over_a_selection(stack):
    pattern = stack.fleet[0]["name"][:-1] + "?"
    matching = [d for d in stack.fleet if re.fullmatch(pattern.replace("?", "."), d["name"])]
    refused = certfleet(stack, "weak-crypto", "enable", "--name-pattern", pattern)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith(f"error: confirmation_required: Enabling weak-crypto lets {len(matching)} "
                                     "devices use weak ciphers") and "--yes" in refused.stderr
    done = certfleet(stack, "weak-crypto", "enable", "--name-pattern", pattern, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"weak-crypto enabled on {len(matching)} devices" in done.stdout
    assert all(stack.client.device(d["id"])["weak_crypto"] for d in matching)
    done = certfleet(stack, "weak-crypto", "disable", "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"weak-crypto disabled on {len(matching)} devices ({DEVICES - len(matching)} of the {DEVICES}" in done.stdout
