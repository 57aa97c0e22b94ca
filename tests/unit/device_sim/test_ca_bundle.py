"""A device's CA bundle over the device-management API, on loopback: certfleet pushes a version and
its PEM set, the device answers what it holds (version, count, SHA-256) and shows the version in
its device info; oversized and unreadable uploads are refused with a stable code and the old
bundle stays; devices holding the same bundle share one parse; the fleet's faults apply."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from services.device_sim.ca_bundles import MAX_BODY_BYTES
from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from shared.device_api import DeviceCaBundle, DeviceInfo, Inventory
from tests.support.tls import make_ca, pem


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=20, seed=4)) as running:
        yield running


@pytest.fixture
def client(sim: RunningSim) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def cas():
    return [make_ca(f"Bundle CA {i}") for i in range(3)]


def device(serial: str) -> str:
    return f"/api/devices/{serial}"


def held(client: httpx.Client, serial: str) -> DeviceCaBundle:
    answer = client.get(f"{device(serial)}/ca-bundle")
    assert answer.status_code == 200, answer.text
    return DeviceCaBundle.model_validate_json(answer.content)


def push(client: httpx.Client, serial: str, version: str, text: str) -> httpx.Response:
    return client.put(f"{device(serial)}/ca-bundle", json={"version": version, "pem": text})


def test_a_device_holds_no_bundle_until_one_is_pushed_then_shows_it(client, cas):
    assert held(client, "FTD-000001") == DeviceCaBundle(version="", certificates=0, sha256="")
    assert DeviceInfo.model_validate_json(client.get(device("FTD-000001")).content).ca_bundle_version == ""

    text = "certfleet CA bundle\n" + pem(*cas[:2])
    answer = push(client, "FTD-000001", "7", text)

    assert answer.status_code == 200, answer.text
    expected = DeviceCaBundle(version="7", certificates=2, sha256=hashlib.sha256(text.encode()).hexdigest())
    assert DeviceCaBundle.model_validate_json(answer.content) == expected
    assert held(client, "FTD-000001") == expected
    assert DeviceInfo.model_validate_json(client.get(device("FTD-000001")).content).ca_bundle_version == "7"
    inventory = Inventory.model_validate_json(client.get("/api/inventory", params={"limit": 2}).content)
    assert [d.ca_bundle_version for d in inventory.items] == ["7", ""]


def test_a_new_bundle_replaces_the_old_one_whole(client, cas):
    assert push(client, "FTD-000002", "1", pem(*cas)).status_code == 200
    assert push(client, "FTD-000002", "2", pem(cas[0])).status_code == 200
    assert (held(client, "FTD-000002").version, held(client, "FTD-000002").certificates) == ("2", 1)


def test_devices_holding_the_same_bundle_share_one_parse(sim, client, cas):
    text = pem(cas[1], cas[2])
    before = sim.sim.bundles.parses
    for serial in ("FTD-000003", "FTD-000004", "FTD-000005"):
        assert push(client, serial, "3", text).status_code == 200
    assert push(client, "FTD-000006", "4", text).status_code == 200  # same certificates, next version

    assert sim.sim.bundles.parses == before + 1
    bundles = [sim.fleet.find(f"FTD-00000{i}").ca_bundle for i in (3, 4, 5, 6)]
    assert bundles[0] is bundles[1] is bundles[2]
    assert bundles[3].version == "4"
    assert bundles[3].ca.trust_anchors_pem == bundles[0].ca.trust_anchors_pem == text


# --- refused uploads ------------------------------------------------------------------------------------

def test_an_upload_over_4_mib_is_refused_with_413_and_the_old_bundle_stays(client, cas):
    assert push(client, "FTD-000007", "1", pem(cas[0])).status_code == 200
    huge = pem(cas[0]) + "x" * MAX_BODY_BYTES

    declared = push(client, "FTD-000007", "2", huge)

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while reading
        yield b'{"version": "2", "pem": "'
        for _ in range(5):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    streamed = client.put(f"{device('FTD-000007')}/ca-bundle", content=chunks(),
                          headers={"content-type": "application/json"})

    for answer in (declared, streamed):
        assert answer.status_code == 413
        assert answer.json() == {"code": "payload_too_large",
                                 "message": "a CA bundle is at most 4 MiB; this request is larger"}
    assert held(client, "FTD-000007").version == "1"


@pytest.mark.parametrize(("body", "code"), [
    ({"version": "2", "pem": "not a certificate"}, "invalid_ca_bundle"),
    ({"version": "2", "pem": ""}, "invalid_ca_bundle"),
    ({"version": "2", "pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, "invalid_ca_bundle"),
    ({"version": "", "pem": "PEM"}, "invalid_ca_bundle_version"),
    ({"version": "v" * 33, "pem": "PEM"}, "invalid_ca_bundle_version"),
    ({"version": 2, "pem": "PEM"}, "invalid_request"),
    ({"pem": "PEM"}, "invalid_request"),
    ("[]", "invalid_request"),
])
def test_an_unreadable_upload_is_refused_with_422_and_a_code_and_the_old_bundle_stays(client, cas, body, code):
    assert push(client, "FTD-000008", "1", pem(cas[0])).status_code == 200
    if isinstance(body, dict):
        body = {k: pem(cas[1]) if v == "PEM" else v for k, v in body.items()}
        answer = client.put(f"{device('FTD-000008')}/ca-bundle", json=body)
    else:
        answer = client.put(f"{device('FTD-000008')}/ca-bundle", content=body)

    assert answer.status_code == 422
    assert answer.json()["code"] == code and answer.json()["message"]
    assert held(client, "FTD-000008").version == "1"


def test_invalid_json_and_an_unknown_device_are_refused():
    with start_in_thread(SimConfig(devices=1)) as small, httpx.Client(base_url=small.url) as client:
        answer = client.put(f"{device('FTD-000001')}/ca-bundle", content=b"{")
        assert (answer.status_code, answer.json()["code"]) == (422, "invalid_json")
        answer = client.get(f"{device('FTD-000002')}/ca-bundle")
        assert (answer.status_code, answer.json()["code"]) == (404, "device_not_found")


# --- faults -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "status", "code"), [
    (SimConfig(devices=2, unreachable_rate=1.0), 503, "device_unreachable"),
    (SimConfig(devices=2, error_rate=1.0), 500, "device_error"),
])
def test_the_fleets_faults_apply_to_the_bundle_endpoints(cas, config, status, code):
    with start_in_thread(config) as faulty, httpx.Client(base_url=faulty.url) as client:
        for answer in (client.get(f"{device('FTD-000001')}/ca-bundle"), push(client, "FTD-000001", "1", pem(cas[0]))):
            assert (answer.status_code, answer.json()["code"]) == (status, code)
        assert faulty.fleet.find("FTD-000001").ca_bundle is None
        assert faulty.sim.requests["get_ca_bundle"] == faulty.sim.requests["put_ca_bundle"] == 1
