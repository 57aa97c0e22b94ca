"""The default keyring's validity as the device reports it (not_valid_before, not_valid_after), over
real HTTP through the workers' device client: the dates are the certificate's own, an expired
keyring ended a month before the device made it, and a regenerated one runs a year from then."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509

from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from shared.device_client import HttpDeviceClient
from tests.support.clock import ManualClock


class Address:
    def __init__(self, sim: RunningSim, serial: str) -> None:
        self.serial, self.management_url = serial, f"{sim.url}/api/devices/{serial}"


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def sim(clock) -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=20, seed=5, expired_keyrings=0.5), clock=clock) as running:
        yield running


@pytest.fixture(scope="module")
def client() -> Iterator[HttpDeviceClient]:
    client = HttpDeviceClient(timeout_seconds=5.0)
    yield client
    client.close()


def test_the_keyring_reports_its_certificate_s_validity_and_an_expired_one_is_regenerated_valid(sim, client, clock):
    states = {serial: client.get_keyring(Address(sim, serial)) for serial in (f"FTD-{i:06d}" for i in range(1, 21))}
    expired = sorted(serial for serial, state in states.items() if not state.valid)
    valid = sorted(serial for serial, state in states.items() if state.valid)
    assert expired and valid

    for state in states.values():
        cert = x509.load_pem_x509_certificate(state.certificate_pem.encode())
        assert (state.not_valid_before, state.not_valid_after) == (cert.not_valid_before_utc, cert.not_valid_after_utc)
    old = states[expired[0]]
    assert (old.reason, old.not_valid_after) == ("expired", clock() - timedelta(days=30))
    assert states[valid[0]].not_valid_after == clock() + timedelta(days=365)

    clock.advance(3600)
    fresh = client.regenerate_keyring(Address(sim, expired[0]))
    assert (fresh.valid, fresh.reason, fresh.not_valid_after) == (True, None, clock() + timedelta(days=365))
    assert fresh.certificate_pem != old.certificate_pem
    assert client.get_keyring(Address(sim, expired[0])) == fresh
