"""The device-management API: the contract between the workers and a device.

The device simulator serves it; :mod:`services.worker.device_client` speaks it. An adapter
for real devices implements the same client interface. All paths are relative to a
device's management URL, ``{base}/api/devices/{serial}``:

    GET    .                                   DeviceInfo
    PUT    ./weak-crypto                       {"enabled": bool} -> DeviceInfo
    GET    ./trustpoints                       [TrustpointState]
    PUT    ./trustpoints/{name}                EnrollmentParameters.to_wire() -> TrustpointState
    POST   ./trustpoints/{name}/enroll         EnrollRequest -> TrustpointState
    GET    ./trustpoints/{name}                TrustpointState (certificates included)
    DELETE ./trustpoints/{name}                204 (also when already gone)
    GET    ./keyring/default                   KeyringState
    POST   ./keyring/default/regenerate        KeyringState

The fleet's inventory is at ``{base}/api/inventory?offset=&limit=`` -> Inventory.
Errors come as ``{"code": ..., "message": ...}`` with a 4xx or 5xx status; a 5xx (or no
answer) is worth retrying, a 4xx is not.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DeviceInfo(_Wire):
    serial: str
    name: str
    model: str
    ip_address: str
    fqdn: str
    management_url: str
    weak_crypto: bool = False


class Inventory(_Wire):
    items: list[DeviceInfo]
    total: int


class InstalledCertificate(_Wire):
    role: Literal["identity", "ca"]
    chain_position: int = 0
    pem: str


class TrustpointState(_Wire):
    name: str
    enrollment_type: str
    ca_status: str
    identity_status: str
    error_code: str | None = None
    error_message: str | None = None
    #: True when the failure may clear by itself (the CA was busy or unreachable).
    retryable: bool = False
    certificates: list[InstalledCertificate] = []
    csr_pem: str | None = None


class EnrollRequest(_Wire):
    #: "enroll" for a new key pair and certificate; "re_enroll" renews with a new key pair.
    mode: Literal["enroll", "re_enroll"] = "enroll"


class KeyringState(_Wire):
    name: str = "default"
    valid: bool
    reason: str | None = None
    certificate_pem: str


class ErrorBody(_Wire):
    code: str
    message: str
