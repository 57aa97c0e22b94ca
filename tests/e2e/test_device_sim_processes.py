"""End to end with the device simulator served by two processes (``certfleet device-sim --processes
2``): certfleet imports the fleet from the first process's URL, each device at the process that
serves it, and enrolls every device self-signed there; what certfleet stored is what each device holds."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest
import redis

from services.cli.api_client import CertfleetClient
from shared.device_api import TrustpointState
from tests.support.pg import fresh_database
from tests.support.procs import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

#: Database 0 is shared with other tests' prefixed keys: everything here lives under NAMESPACE.
SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
NAMESPACE = "e2e-device-sim-processes"
DEVICES = 40


def cleanup_redis() -> None:
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    keys = list(client.scan_iter(f"{NAMESPACE}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def stack(tmp_path):
    cleanup_redis()
    env = {"CERTFLEET_BROKER_NAMESPACE": NAMESPACE, "CERTFLEET_ALERT_STREAM_KEY": f"{NAMESPACE}:alerts"}
    try:
        with fresh_database() as database_url, Stack(
                database_url=database_url, broker_url=SHARED_REDIS_URL, log_dir=tmp_path, devices=DEVICES,
                workers=1, sim_args=["--processes", "2"], extra_env=env) as s:
            yield s
    finally:
        cleanup_redis()


def wait_until_enrolled(client: CertfleetClient, timeout: float = 120) -> Counter:
    deadline = time.monotonic() + timeout
    while True:
        counts = Counter(t["identity_status"] for t in client.trustpoints())
        if counts["available"] + counts["failed"] >= DEVICES or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def test_certfleet_imports_and_enrolls_a_fleet_two_simulator_processes_serve(stack: Stack) -> None:
    sim = next(p for p in stack.procs if p.name == "device-sim")
    ready = sim.wait_for_line(r"device-sim ready: (\S+) devices=40 processes=2 urls=(\S+)")
    urls = ready.group(2).split(",")
    assert urls[0] == ready.group(1) == stack.sim_url

    with CertfleetClient(stack.api_url, stack.token) as client:
        assert client.import_devices(stack.sim_url)["imported"] == DEVICES
        devices = client.devices()
        assert sorted(d["serial"] for d in devices) == [f"FTD-{i:06d}" for i in range(1, DEVICES + 1)]
        assert Counter(d["management_url"].rsplit("/api/", 1)[0] for d in devices) == {urls[0]: 20, urls[1]: 20}

        obj = client.create_enrollment_object(name="vpn", enrollment_type="self_signed", key_type="ecdsa",
                                              key_size=256, common_name="vpn.example.com", include_fqdn=True)
        client.start_bulk_enrollment(obj["id"])
        assert wait_until_enrolled(client) == Counter(available=DEVICES)

        with httpx.Client(timeout=10) as http:
            for device in devices:
                stored = client.trustpoint(device["id"], "vpn")["identity_certificate"]["pem"]
                held = TrustpointState.model_validate_json(
                    http.get(f"{device['management_url']}/trustpoints/vpn").content)
                assert stored.strip() in [c.pem.strip() for c in held.certificates if c.role == "identity"]
            stats = http.get(f"{stack.sim_url}/api/stats").json()
    assert [p["url"] for p in stats["by_process"]] == urls
    assert all(p["devices"] == 20 and p["requests"].get("enroll", 0) >= 20 for p in stats["by_process"]), stats
