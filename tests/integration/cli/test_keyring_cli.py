"""``certfleet system support regenerate-security-keyring default`` and ``certfleet device show``,
run in this process against an embedded stack (API, worker threads, the device simulator with
half its keyrings expired) on loopback: what the operator reads, and the exit status."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from services.cli.api_client import CertfleetClient
from services.cli.main import main
from services.stack.embedded import EmbeddedStack
from services.worker.health import HealthChecker
from shared.logging import configure_logging
from shared.settings import Settings


@dataclass
class Cli:
    stack: EmbeddedStack
    client: CertfleetClient

    def run(self, capsys, *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*args, "--api-url", self.stack.api_url, "--token", self.stack.admin_token])
        out, err = capsys.readouterr()
        return code, out, err

    def check_health(self) -> None:
        """One health check of every device, as the device-health schedule has the workers do."""
        checker = HealthChecker(self.stack.context, threads=2)
        try:
            checker.check([d["id"] for d in self.client.devices()])
        finally:
            checker.close()

    def devices(self) -> dict[str, dict]:
        return {d["serial"]: d for d in self.client.devices()}


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> Iterator[Cli]:
    # The stack's worker threads share this process's standard error with the command under test:
    # at WARNING they stay quiet, so what the command itself wrote is what the tests read.
    configure_logging("WARNING")
    stack = EmbeddedStack(Settings(log_level="WARNING"), devices=6, worker_threads=4, seed=5,
                          sim_options={"expired_keyrings": 0.5},
                          state_dir=tmp_path_factory.mktemp("keyring-cli") / "state").start()
    client = CertfleetClient(stack.api_url, stack.admin_token)
    client.import_devices(stack.sim.url)
    yield Cli(stack, client)
    client.close()
    stack.stop()
    configure_logging()  # the default level again for the tests that follow in this process


def test_device_show_prints_the_keyring_and_one_device_s_keyring_is_regenerated(cli, capsys):
    cli.check_health()
    expired = sorted(serial for serial, d in cli.devices().items() if d["keyring"]["valid"] is False)
    assert len(expired) >= 2
    serial = expired[0]

    code, out, _ = cli.run(capsys, "device", "show", serial)
    assert code == 0
    assert "default keyring" in out and "invalid, reason: expired (certificate ended" in out
    assert f"regenerate-security-keyring default --device {serial}" in out
    assert "health checked" in out

    code, out, err = cli.run(capsys, "system", "support", "regenerate-security-keyring", "default", "--device", serial)
    assert (code, err) == (0, ""), err
    assert f"regeneration of the default keyring of ftd-{serial[4:].lower()} started: job " in out
    assert "succeeded: the default keyring of" in out and "is valid, valid until" in out
    assert cli.devices()[serial]["keyring"]["valid"] is True

    code, out, _ = cli.run(capsys, "device", "show", serial)
    assert "default keyring" in out and "valid until" in out and "invalid" not in out


def test_all_expired_regenerates_every_expired_keyring_showing_progress(cli, capsys):
    cli.check_health()
    expired = sorted(serial for serial, d in cli.devices().items() if d["keyring"]["valid"] is False)
    assert expired

    code, out, err = cli.run(capsys, "system", "support", "regenerate-security-keyring", "default", "--all-expired",
                             "--interval", "0.05")

    assert (code, err) == (0, ""), err
    text = " ".join(out.split())  # rich wraps long lines
    assert "started keyring regeneration " in text
    assert f": {len(expired)} devices with an expired default keyring (0 skipped: a regeneration already under way)" \
        in text
    assert f"the default keyring on {len(expired)} selected devices" in text
    assert f"{len(expired)} succeeded, 0 failed of {len(expired)}" in text
    assert all(cli.devices()[serial]["keyring"]["valid"] is True for serial in expired)

    # Nothing expired any more: refused, saying why.
    code, _, err = cli.run(capsys, "system", "support", "regenerate-security-keyring", "default", "--all-expired")
    assert code == 1
    assert err.startswith("error: no_expired_keyrings: no device in this domain or its subdomains has an expired "
                          "default keyring")


def test_only_the_default_keyring_can_be_regenerated(cli, capsys):
    code, _, err = cli.run(capsys, "system", "support", "regenerate-security-keyring", "vpn", "--device", "FTD-000001")
    assert code == 2
    assert err == "error: unknown_keyring: only the default keyring can be regenerated: regenerate-security-keyring " \
                  "default, not 'vpn'\n"
    code, _, err = cli.run(capsys, "system", "support", "regenerate-security-keyring", "default", "--device", "nope")
    assert code == 1 and err.startswith("error: unknown_device: ")
