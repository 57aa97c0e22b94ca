"""The one resolver every command uses for DEVICE and --domain, against the controller's API
over real HTTP on loopback: ids, names and serials, subdomains, unknown and ambiguous ones."""

from __future__ import annotations

import uuid

import pytest

from services.cli.api_client import CertfleetClient
from services.cli.errors import CliError
from services.cli.lookup import resolve_device, resolve_devices, resolve_domain
from shared.http_thread import ServerThread
from tests.support.api import GLOBAL


@pytest.fixture
def fleet(api):
    branch = api.domain("Branch")
    devices = {
        "edge-a": api.device("FTD-A", name="edge"),
        "edge-b": api.device("FTD-B", name="edge"),
        "core": api.device("FTD-C", name="core"),
        "branch": api.device("FTD-D", name="branch-fw", domain=branch),
        # Named like another device's serial.
        "twin": api.device("FTD-E", name="FTD-C"),
    }
    server = ServerThread(api.client.app).start()
    with CertfleetClient(server.url, api.tokens["admin"]) as client:
        yield client, devices, branch
    server.stop()


def test_a_device_by_id_name_or_serial(fleet):
    client, devices, _ = fleet
    core = devices["core"]["id"]
    assert resolve_device(client, core, domain_id=GLOBAL)["id"] == core
    assert resolve_device(client, "core", domain_id=GLOBAL)["id"] == core
    assert resolve_device(client, "FTD-A", domain_id=GLOBAL)["id"] == devices["edge-a"]["id"]


def test_a_subdomain_s_device_is_found_from_its_ancestors_only(fleet):
    client, devices, branch = fleet
    assert resolve_device(client, "branch-fw", domain_id=GLOBAL)["id"] == devices["branch"]["id"]
    assert resolve_device(client, "branch-fw", domain_id=branch)["id"] == devices["branch"]["id"]
    with pytest.raises(CliError) as refused:
        resolve_device(client, "core", domain_id=branch)
    assert refused.value.code == "unknown_device"


def test_unknown_references_are_all_named(fleet):
    client, _, _ = fleet
    stranger = str(uuid.uuid4())
    with pytest.raises(CliError) as refused:
        resolve_devices(client, ["core", "nowhere", stranger], domain_id=GLOBAL)
    assert refused.value.code == "unknown_device" and refused.value.exit_status == 1
    assert f"'nowhere', '{stranger}'" in refused.value.message


def test_a_name_two_devices_share_or_one_s_name_another_s_serial_is_ambiguous(fleet):
    client, devices, _ = fleet
    with pytest.raises(CliError) as refused:
        resolve_device(client, "edge", domain_id=GLOBAL)
    assert refused.value.code == "ambiguous_device"
    assert devices["edge-a"]["id"] in refused.value.message and devices["edge-b"]["id"] in refused.value.message
    with pytest.raises(CliError) as refused:
        resolve_device(client, "FTD-C", domain_id=GLOBAL)
    assert refused.value.code == "ambiguous_device"
    assert devices["twin"]["id"] in refused.value.message and devices["core"]["id"] in refused.value.message


def test_several_references_to_one_device_give_it_once(fleet):
    client, devices, _ = fleet
    core = devices["core"]["id"]
    assert [d["id"] for d in resolve_devices(client, [core, "core", "FTD-A"], domain_id=GLOBAL)] == [
        core, devices["edge-a"]["id"]]


def test_a_domain_by_id_or_name(fleet):
    client, _, branch = fleet
    assert resolve_domain(client, "Branch") == branch
    assert resolve_domain(client, branch) == branch
    with pytest.raises(CliError) as refused:
        resolve_domain(client, "Nowhere")
    assert refused.value.code == "unknown_domain" and "Branch, Global" in refused.value.message
