"""A fleet served by several simulator processes (``--processes N``), here as several simulators in
this process, each serving its partition over real HTTP on loopback: every one lists the whole
fleet as one simulator would, answers for its own devices only, and gives the same fleet-wide
answers (statistics, devices taken offline) as the others."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from services.device_sim.config import SimConfig
from services.device_sim.partition import Partition
from services.device_sim.server import RunningSim, start_in_thread
from shared.device_api import Inventory
from shared.http_thread import bind
from tests.support.tls import make_ca

KEY = "partition-test-fleet-key"


@contextmanager
def partitioned(config: SimConfig, count: int) -> Iterator[list[RunningSim]]:
    """``count`` simulators sharing the fleet as the processes of ``--processes count`` do."""
    sockets = [bind("127.0.0.1", 0) for _ in range(count)]
    urls = tuple(f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in sockets)
    running: list[RunningSim] = []
    try:
        for position, sock in enumerate(sockets):
            partition = Partition(position=position, count=count, urls=urls, peer_urls=urls)
            running.append(start_in_thread(config, partition=partition, sock=sock))
        yield running
    finally:
        for sim in running:
            sim.stop()
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client for all: a new one per request would spend longer setting itself up than the request takes."""
    with httpx.Client(timeout=10) as client:
        yield client


def inventory(http: httpx.Client, url: str, *, limit: int) -> Inventory:
    """The whole inventory at ``url``, paged ``limit`` devices at a time, as one Inventory."""
    items, offset = [], 0
    while True:
        page = Inventory.model_validate_json(
            http.get(f"{url}/api/inventory", params={"offset": offset, "limit": limit}).content)
        if not page.items:
            return Inventory(items=items, total=page.total)
        items += page.items
        offset += len(page.items)


def owner_url(sims: list[RunningSim], index: int) -> str:
    return sims[(index - 1) % len(sims)].url


def test_every_process_lists_the_whole_fleet_as_one_simulator_does_each_device_at_its_owner(http: httpx.Client) -> None:
    config = SimConfig(devices=23, seed=8, credential_key=KEY)
    with start_in_thread(config) as alone:
        single = inventory(http, alone.url, limit=1000)
    with partitioned(config, 3) as sims:
        assert [len(sim.fleet.devices) for sim in sims] == [8, 8, 7], "each process holds only its own devices"
        listings = [inventory(http, sim.url, limit=limit) for sim in sims for limit in (1, 4, 1000)]
    for listing in listings:
        assert listing.total == 23
        assert [d.serial for d in listing.items] == [f"FTD-{i:06d}" for i in range(1, 24)]
        assert listing.model_dump(mode="json") == listings[0].model_dump(mode="json")
    for index, (device, alone_device) in enumerate(zip(listings[0].items, single.items, strict=True), start=1):
        assert device.management_url == f"{owner_url(sims, index)}/api/devices/{device.serial}"
        # Model, addresses and credential do not depend on how many processes serve the fleet.
        assert device.model_copy(update={"management_url": ""}) == alone_device.model_copy(
            update={"management_url": ""})
        assert device.endpoint_credential == alone_device.endpoint_credential


def test_a_device_is_served_by_its_owner_and_refused_with_404_elsewhere(http: httpx.Client) -> None:
    with partitioned(SimConfig(devices=6, credential_key=KEY), 2) as (first, second):
        assert http.get(f"{first.url}/api/devices/FTD-000001").json()["serial"] == "FTD-000001"
        assert http.get(f"{second.url}/api/devices/FTD-000002/trustpoints").json() == []
        for url, serial, owner in ((second.url, "FTD-000001", first.url), (first.url, "FTD-000002", second.url)):
            refused = http.put(f"{url}/api/devices/{serial}/trustpoints/vpn",
                                json={"name": "vpn", "enrollment_type": "self_signed", "key_type": "ecdsa",
                                      "key_size": 256})
            assert refused.status_code == 404
            assert refused.json() == {
                "code": "device_not_found",
                "message": f"device {serial} is not served here but by simulator process "
                           f"{1 if owner == first.url else 2} of 2 ({owner}): ask at its management URL"}
        assert second.fleet.find("FTD-000001") is None, "nothing was configured on the wrong process"
        absent = http.get(f"{first.url}/api/devices/FTD-000007")
        assert (absent.status_code, absent.json()["code"]) == (404, "device_not_found")
        assert "serials run from FTD-000001 to FTD-000006" in absent.json()["message"]


def test_what_an_owner_changes_on_a_device_shows_in_every_process_inventory(http: httpx.Client) -> None:
    bundle_pem = make_ca("Partition Test Root").pem
    with partitioned(SimConfig(devices=5, credential_key=KEY), 2) as (first, second):
        assert http.put(f"{second.url}/api/devices/FTD-000004/weak-crypto", json={"enabled": True}).status_code == 200
        pushed = http.put(f"{first.url}/api/devices/FTD-000003/ca-bundle", json={"version": "7", "pem": bundle_pem})
        assert pushed.status_code == 200
        for sim in (first, second):
            items = {d.serial: d for d in inventory(http, sim.url, limit=2).items}
            assert [s for s, d in items.items() if d.weak_crypto] == ["FTD-000004"]
            assert {s: d.ca_bundle_version for s, d in items.items() if d.ca_bundle_version} == {"FTD-000003": "7"}


def test_statistics_and_offline_devices_are_fleet_wide_whichever_process_is_asked(http: httpx.Client) -> None:
    with partitioned(SimConfig(devices=8, credential_key=KEY), 2) as (first, second):
        taken = http.put(f"{second.url}/api/offline", json={"serials": ["FTD-000001", "FTD-000002"]})
        assert taken.json() == {"offline": ["FTD-000001", "FTD-000002"]}
        for serial, sim in (("FTD-000001", first), ("FTD-000002", second)):
            answer = http.get(f"{sim.url}/api/devices/{serial}")
            assert (answer.status_code, answer.json()["code"]) == (503, "device_unreachable")
        assert http.get(f"{second.url}/api/devices/FTD-000004").status_code == 200
        unknown = http.put(f"{first.url}/api/offline", json={"serials": ["FTD-000009"]})
        assert (unknown.status_code, unknown.json()["code"]) == (404, "device_not_found")

        stats = [http.get(f"{sim.url}/api/stats").json() for sim in (first, second)]
        assert stats[0] == stats[1]
        assert stats[0]["devices"] == 8 and stats[0]["processes"] == 2
        assert stats[0]["faults"] == {"offline": 2}
        assert stats[0]["requests"] == {"offline": 2, "device": 3}
        assert [(p["url"], p["devices"], p["faults"]) for p in stats[0]["by_process"]] == [
            (first.url, 4, {"offline": 1}), (second.url, 4, {"offline": 1})]

        assert http.put(f"{first.url}/api/offline", json={"serials": []}).json() == {"offline": []}
        assert http.get(f"{second.url}/api/devices/FTD-000002").status_code == 200


@pytest.mark.parametrize("faults", [{"error_rate": 0.3}, {"unreachable_rate": 0.3}])
def test_injected_faults_hit_the_same_requests_as_in_one_simulator(http: httpx.Client, faults: dict) -> None:
    config = SimConfig(devices=10, seed=12, credential_key=KEY, **faults)

    def statuses(url_of) -> list[int]:
        return [http.get(f"{url_of(i)}/api/devices/FTD-{i:06d}").status_code for _ in range(6) for i in range(1, 11)]

    with start_in_thread(config) as alone:
        expected = statuses(lambda _i: alone.url)
    with partitioned(config, 3) as sims:
        assert statuses(lambda i: owner_url(sims, i)) == expected
    assert 200 in expected and len(set(expected)) == 2


def test_expired_keyrings_are_the_same_devices_as_in_one_simulator(http: httpx.Client) -> None:
    config = SimConfig(devices=30, seed=4, expired_keyrings=0.3, credential_key=KEY)
    with start_in_thread(config) as alone:
        expected = {d.serial for d in alone.fleet.devices if d.keyring_expired}
    with partitioned(config, 4) as sims:
        held = [{d.serial for d in sim.fleet.devices if d.keyring_expired} for sim in sims]
        invalid = {f"FTD-{i:06d}" for i in range(1, 31)
                   if not http.get(f"{owner_url(sims, i)}/api/devices/FTD-{i:06d}/keyring/default").json()["valid"]}
    assert set().union(*held) == invalid == expected and expected


def test_a_process_that_does_not_answer_fails_the_fleet_wide_answers_clearly(http: httpx.Client) -> None:
    with partitioned(SimConfig(devices=4, credential_key=KEY), 2) as (first, second):
        second.stop()
        for answer in (http.get(f"{first.url}/api/inventory"), http.get(f"{first.url}/api/stats"),
                       http.put(f"{first.url}/api/offline", json={"serials": []})):
            assert answer.status_code == 502
            assert answer.json()["code"] == "simulator_process_unreachable"
            assert f"simulator process 2 of 2 ({second.url}) did not answer" in answer.json()["message"]
        assert http.get(f"{first.url}/api/devices/FTD-000001").status_code == 200, "its own devices still answer"

