"""The simulated fleet's state: devices, their trustpoints, default keyrings and CA bundles. No HTTP.

Lean on purpose: 50,000 devices live in one process. Every record uses ``__slots__``, a
device's identity is derived from its index, and the default keyring (a key pair and a
certificate) is made only when first asked for.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime

from services.device_sim.ca_bundles import DeviceBundle
from services.device_sim.config import SimConfig
from services.device_sim.seeding import fraction
from services.device_sim.tasks import HeldRequest
from shared.enrollment import EnrollmentParameters
from shared.errors import NotFoundError
from shared.pki import DeviceIdentity, PrivateKey
from shared.states import Status

#: Threat-defense models in the fleet, with how common each one is.
MODELS: dict[str, int] = {"FTD-1010": 4, "FTD-2110": 3, "FTD-3105": 2, "FTDv": 3}
SERIAL = re.compile(r"^FTD-(\d{6})$")
#: Every tenth device is addressed over IPv6; the addresses are data only, never contacted.
IPV6_EVERY = 10


@dataclass(slots=True)
class InstalledCert:
    role: str  # "identity" or "ca"
    chain_position: int
    pem: str


@dataclass(slots=True)
class Trustpoint:
    """A trustpoint on the device. Its statuses change only through shared.states.transition."""

    name: str
    params: EnrollmentParameters
    ca_status: str = Status.IN_PROGRESS.value
    identity_status: str = Status.IN_PROGRESS.value
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    status_changed_at: datetime | None = None
    certificates: list[InstalledCert] = field(default_factory=list)
    #: The configuration the installed certificate was made for (None: nothing installed).
    issued_for: EnrollmentParameters | None = None
    #: Stays on the device: never serialised, never returned.
    private_key: PrivateKey | None = field(default=None, repr=False)
    #: A request the CA holds for an operator's approval (EST 202); its key stays here too.
    held: HeldRequest | None = field(default=None, repr=False)


@dataclass(slots=True)
class Keyring:
    """The device's default keyring: the certificate it shows on its own services."""

    pem: str
    not_valid_before: datetime
    not_valid_after: datetime
    private_key: PrivateKey = field(repr=False)


@dataclass(slots=True)
class Device:
    index: int
    serial: str
    name: str
    model: str
    ip_address: str
    fqdn: str
    weak_crypto: bool = False
    #: Whether the default keyring, when first made, carries an already expired certificate.
    keyring_expired: bool = False
    keyring: Keyring | None = None
    trustpoints: dict[str, Trustpoint] = field(default_factory=dict)
    #: The CA bundle certfleet pushed (shared with every device holding the same one).
    ca_bundle: DeviceBundle | None = None
    #: Requests this device has received; numbers each request for the fault plan.
    requests: int = 0

    @property
    def identity(self) -> DeviceIdentity:
        return DeviceIdentity(serial=self.serial, fqdn=self.fqdn, ip_address=self.ip_address)

    def next_request_number(self) -> int:
        self.requests += 1
        return self.requests


def serial_for(index: int) -> str:
    return f"FTD-{index:06d}"


def ip_address_for(index: int) -> str:
    if index % IPV6_EVERY == 0:
        return f"2001:db8::{index:x}"
    # 10.x.y.z with z in 1..250: no network or broadcast-looking addresses.
    block, host = divmod(index - 1, 250)
    return f"10.{block // 256 % 256}.{block % 256}.{host + 1}"


class Fleet:
    """Devices FTD-000001 … FTD-{n}, looked up by serial, paged for the inventory."""

    def __init__(self, devices: list[Device], *, seed: int) -> None:
        self.devices = devices
        self.seed = seed

    @classmethod
    def build(cls, config: SimConfig) -> Fleet:
        rng = random.Random(config.seed)
        models = rng.choices(list(MODELS), weights=list(MODELS.values()), k=config.devices)
        expired = config.expired_keyrings
        devices = []
        for index in range(1, config.devices + 1):
            serial = serial_for(index)
            host = f"ftd-{index:06d}"
            devices.append(Device(
                index=index, serial=serial, name=host, model=models[index - 1],
                ip_address=ip_address_for(index), fqdn=f"{host}.fleet.example",
                keyring_expired=expired > 0 and fraction(config.seed, "expired_keyring", serial) < expired,
            ))
        return cls(devices, seed=config.seed)

    def __len__(self) -> int:
        return len(self.devices)

    def find(self, serial: str) -> Device | None:
        match = SERIAL.match(serial)
        if match is None:
            return None
        index = int(match.group(1))
        return self.devices[index - 1] if 1 <= index <= len(self.devices) else None

    def get(self, serial: str) -> Device:
        device = self.find(serial)
        if device is None:
            raise NotFoundError(
                f"no device with serial {serial!r} in this fleet (serials run from {serial_for(1)} to "
                f"{serial_for(len(self.devices))})",
                code="device_not_found",
            )
        return device

    def page(self, *, offset: int, limit: int) -> list[Device]:
        return self.devices[offset:offset + limit]
