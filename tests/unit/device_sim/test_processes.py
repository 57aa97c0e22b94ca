"""``certfleet device-sim --processes N`` as an operator runs it: real processes on loopback. The
inventory, paged as certfleet's import pages it, lists every device once at its owner's URL; a
device enrolls through the device client the workers use at its owner and is refused by the
other process; stopping or killing the command leaves no serving process behind, and a serving
process that dies takes the command down with a message saying which."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.controller.inventory import fetch_inventory
from shared.device_client import HttpDeviceClient
from shared.enrollment import EnrollmentParameters
from shared.errors import PermanentError
from tests.support.procs import Proc
from tests.support.waiting import wait_until

READY = r"device-sim ready: (\S+) devices=(\d+) processes=(\d+) urls=(\S+)"


@dataclass
class At:
    """A device where a client addresses it."""

    serial: str
    management_url: str


def start(tmp_path: Path, *args: str, name: str = "device-sim") -> tuple[Proc, list[str]]:
    """The command started with ``args``, and each serving process's URL once all serve."""
    sim = Proc(name, ["device-sim", "--port", "0", *args], dict(os.environ), tmp_path)
    ready = sim.wait_for_line(READY)
    urls = ready.group(4).split(",")
    assert ready.group(1) == urls[0], "the first process's URL stays the simulator's URL"
    return sim, urls


def serving_processes(sim: Proc) -> list[int]:
    return [pid for pid in sim.session() if pid != sim.popen.pid]


def test_two_processes_list_the_whole_fleet_and_each_serves_its_own_devices(tmp_path: Path) -> None:
    sim, urls = start(tmp_path, "--devices", "40", "--processes", "2", "--seed", "3")
    try:
        assert len(set(urls)) == 2 and len(serving_processes(sim)) == 2
        devices = [d for page in fetch_inventory(urls[0], page_size=7) for d in page]
        assert [d.serial for d in devices] == [f"FTD-{i:06d}" for i in range(1, 41)], "every device once, in order"
        assert Counter(d.management_url.rsplit("/api/", 1)[0] for d in devices) == {urls[0]: 20, urls[1]: 20}
        assert len({d.endpoint_credential.get_secret_value() for d in devices}) == 40
        from_second = [d for page in fetch_inventory(urls[1], page_size=5000) for d in page]
        assert [d.model_dump(mode="json") for d in from_second] == [d.model_dump(mode="json") for d in devices]

        params = EnrollmentParameters(name="vpn", enrollment_type="self_signed", key_type="ecdsa", key_size=256)
        client = HttpDeviceClient(timeout_seconds=10)
        try:
            for device in devices[:2]:
                owner = At(device.serial, device.management_url)
                client.configure_trustpoint(owner, params)
                state = client.enroll(owner, "vpn")
                assert (state.ca_status, state.identity_status) == ("available", "available")
                other_url = urls[1] if device.management_url.startswith(urls[0] + "/") else urls[0]
                elsewhere = At(device.serial, f"{other_url}/api/devices/{device.serial}")
                with pytest.raises(PermanentError) as refused:
                    client.get_trustpoint(elsewhere, "vpn")
                assert refused.value.code == "device_not_found"
                assert "not served here but by simulator process" in refused.value.message
                assert client.get_trustpoint(owner, "vpn").identity_status == "available"
        finally:
            client.close()

        os.kill(sim.popen.pid, signal.SIGTERM)  # the command alone: it stops its processes itself
        assert sim.popen.wait(30) == 0
        wait_until(lambda: not sim.session(), timeout=30, what="every serving process stopping")
    finally:
        sim.stop()


def test_each_process_has_its_public_url_in_its_devices_management_urls(tmp_path: Path) -> None:
    sim, urls = start(tmp_path, "--devices", "4", "--processes", "2",
                      "--public-url", "http://sim-a.example:8400/,http://sim-b.example:8401")
    try:
        devices = [d for page in fetch_inventory(urls[1]) for d in page]
        assert [d.management_url for d in devices] == [
            "http://sim-a.example:8400/api/devices/FTD-000001", "http://sim-b.example:8401/api/devices/FTD-000002",
            "http://sim-a.example:8400/api/devices/FTD-000003", "http://sim-b.example:8401/api/devices/FTD-000004"]
    finally:
        sim.stop()


def test_serving_processes_stop_by_themselves_when_the_command_is_killed(tmp_path: Path) -> None:
    sim, _urls = start(tmp_path, "--devices", "4", "--processes", "2")
    try:
        assert len(serving_processes(sim)) == 2
        os.kill(sim.popen.pid, signal.SIGKILL)
        sim.popen.wait(10)
        wait_until(lambda: not sim.session(), timeout=30, what="the orphaned serving processes stopping")
    finally:
        sim.stop()


def test_a_serving_process_that_dies_stops_the_others_and_fails_the_command(tmp_path: Path) -> None:
    sim, urls = start(tmp_path, "--devices", "4", "--processes", "2")
    try:
        victim = serving_processes(sim)[-1]
        os.kill(victim, signal.SIGKILL)
        assert sim.popen.wait(30) == 1
        wait_until(lambda: not sim.session(), timeout=30, what="the other serving process stopping")
        said = re.search(r"error: simulator_process_exited: simulator process (\d) of 2 \((\S+)\), pid (\d+), "
                         r"was killed by SIGKILL: the fleet is served by all of its processes or not at all",
                         sim.output())
        assert said, sim.output()
        assert said.group(2) == urls[int(said.group(1)) - 1] and int(said.group(3)) == victim
    finally:
        sim.stop()


def test_setups_the_processes_cannot_serve_are_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("no certificate here\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refusals = [
            (["--devices", "2", "--processes", "3"], 2,
             re.escape("error: configuration_error: processes must be 1 to 64 and at most the number of devices "
                       "(2), not 3")),
            (["--devices", "4", "--processes", "2", "--public-url", "http://device-sim:8400"], 2,
             re.escape("error: configuration_error: public_url must name one URL per process (2, comma-separated, "
                       "in order), not 1: 'http://device-sim:8400'")),
            (["--devices", "4", "--processes", "2", "--trust-anchor", str(tmp_path / "empty.pem")], 2,
             r"error: configuration_error: simulator process [12] of 2 \(http://127.0.0.1:\d+\): trust anchor "
             r"\S+empty.pem holds no PEM certificate"),
            (["--devices", "4", "--processes", "2", "--port", str(port)], 1,
             re.escape(f"error: cannot_listen: cannot listen on 127.0.0.1:{port}: Address already in use")),
        ]
        for number, (args, status, says) in enumerate(refusals):
            sim = Proc(f"refused-{number}", ["device-sim", "--port", "0", *args], dict(os.environ), tmp_path)
            try:
                assert sim.popen.wait(60) == status, sim.output()
                assert re.search(says, sim.output()), sim.output()
                assert "device-sim ready" not in sim.output()
                wait_until(lambda sim=sim: not sim.session(), timeout=30, what="nothing left running")
            finally:
                sim.stop()
