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
from services.device_sim.partition import Partition
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
    """Devices FTD-000001 … FTD-{size}, looked up by serial and paged for the inventory. A process
    holds the devices its partition owns (all of them when it serves alone) and answers only for
    those; it lists the others from their index."""

    def __init__(self, devices: list[Device], *, seed: int, size: int | None = None,
                 partition: Partition = Partition(), models: list[str] | None = None) -> None:
        #: The devices this process holds, in serial order.
        self.devices = devices
        self.seed = seed
        self.size = len(devices) if size is None else size
        self.partition = partition
        #: Every device's model, for listing the devices of other processes.
        self._models = models

    @classmethod
    def build(cls, config: SimConfig, partition: Partition = Partition()) -> Fleet:
        rng = random.Random(config.seed)
        # Drawn for the whole fleet in every process, so a device's model does not depend on how
        # many processes serve the fleet.
        models = rng.choices(list(MODELS), weights=list(MODELS.values()), k=config.devices)
        expired = config.expired_keyrings
        devices = []
        for index in range(partition.position + 1, config.devices + 1, partition.count):
            device = _listed(index, models[index - 1])
            device.keyring_expired = expired > 0 and fraction(config.seed, "expired_keyring", device.serial) < expired
            devices.append(device)
        return cls(devices, seed=config.seed, size=config.devices, partition=partition,
                   models=models if partition.shared else None)

    def __len__(self) -> int:
        """The whole fleet's size, wherever its devices are served."""
        return self.size

    def index_of(self, serial: str) -> int | None:
        match = SERIAL.match(serial)
        if match is None:
            return None
        index = int(match.group(1))
        return index if 1 <= index <= self.size else None

    def find(self, serial: str) -> Device | None:
        """The device, if this process holds it."""
        index = self.index_of(serial)
        if index is None or not self.partition.owns(index):
            return None
        return self.devices[(index - 1) // self.partition.count]

    def get(self, serial: str) -> Device:
        """The device; 404 device_not_found when the fleet lacks it or another process serves it."""
        index = self.check(serial)
        partition = self.partition
        if not partition.owns(index):
            raise NotFoundError(
                f"device {serial} is not served here but by {partition.describe(partition.owner(index))}: "
                "ask at its management URL",
                code="device_not_found",
            )
        return self.devices[(index - 1) // partition.count]

    def check(self, serial: str) -> int:
        """The index of a device of the fleet (served here or not); 404 device_not_found otherwise."""
        index = self.index_of(serial)
        if index is None:
            raise NotFoundError(
                f"no device with serial {serial!r} in this fleet (serials run from {serial_for(1)} to "
                f"{serial_for(self.size)})",
                code="device_not_found",
            )
        return index

    def page(self, *, offset: int, limit: int) -> list[Device]:
        """The devices listed from ``offset``: this process's own records, and for devices another
        process serves, records of their identity only (their state is the owner's to tell)."""
        partition = self.partition
        if not partition.shared:
            return self.devices[offset:offset + limit]
        assert self._models is not None
        return [self.devices[(i - 1) // partition.count] if partition.owns(i) else _listed(i, self._models[i - 1])
                for i in range(offset + 1, min(offset + limit, self.size) + 1)]

    def held_in(self, *, offset: int, limit: int) -> list[Device]:
        """This process's devices among those listed from ``offset``."""
        partition = self.partition
        first = offset + (partition.position - offset) % partition.count  # 0-based
        end = min(offset + limit, self.size)
        return [self.devices[j // partition.count] for j in range(first, end, partition.count)]


def _listed(index: int, model: str) -> Device:
    """Device ``index`` as it starts: its identity, nothing configured yet."""
    host = f"ftd-{index:06d}"
    return Device(index=index, serial=serial_for(index), name=host, model=model,
                  ip_address=ip_address_for(index), fqdn=f"{host}.fleet.example")
