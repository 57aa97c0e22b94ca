"""Device state as the device-management API shows it (:mod:`shared.device_api`).

The one place that turns fleet records into wire models; private keys have no field here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.device_sim import keyring as keyrings
from services.device_sim.ca_bundles import DeviceBundle
from services.device_sim.fleet import Device, Keyring, Trustpoint
from services.device_sim.manual import csr_pem
from shared.device_api import DeviceCaBundle, DeviceInfo, InstalledCertificate, KeyringState, TrustpointState


def management_url(base_url: str, serial: str) -> str:
    return f"{base_url}/api/devices/{serial}"


def device_info(device: Device, *, base_url: str, credential: str | None = None) -> DeviceInfo:
    """The device as the API shows it; ``credential`` only in the inventory (an admin's import stores it)."""
    return DeviceInfo(
        serial=device.serial, name=device.name, model=device.model, ip_address=device.ip_address,
        fqdn=device.fqdn, management_url=management_url(base_url, device.serial),
        weak_crypto=device.weak_crypto,
        ca_bundle_version=device.ca_bundle.version if device.ca_bundle is not None else "",
        endpoint_credential=credential,
    )


def changed_state(device: Device) -> dict[str, Any] | None:
    """The fields of the device's DeviceInfo that differ from how it started, None if none: what the
    process holding it tells the process listing it (see peers.py)."""
    changed: dict[str, Any] = {}
    if device.weak_crypto:
        changed["weak_crypto"] = True
    if device.ca_bundle is not None:
        changed["ca_bundle_version"] = device.ca_bundle.version
    return changed or None


def ca_bundle_state(bundle: DeviceBundle | None) -> DeviceCaBundle:
    if bundle is None:
        return DeviceCaBundle()
    return DeviceCaBundle(version=bundle.version, certificates=bundle.certificates, sha256=bundle.sha256)


def trustpoint_state(trustpoint: Trustpoint) -> TrustpointState:
    return TrustpointState(
        name=trustpoint.name,
        enrollment_type=trustpoint.params.enrollment_type.value,
        ca_status=trustpoint.ca_status,
        identity_status=trustpoint.identity_status,
        error_code=trustpoint.error_code,
        error_message=trustpoint.error_message,
        retryable=trustpoint.retryable,
        retry_after=trustpoint.retry_after if trustpoint.retryable else None,
        certificates=[
            InstalledCertificate(role=c.role, chain_position=c.chain_position, pem=c.pem)  # type: ignore[arg-type]
            for c in trustpoint.certificates
        ],
        csr_pem=csr_pem(trustpoint),
    )


def keyring_state(keyring: Keyring, *, now: datetime) -> KeyringState:
    valid, reason = keyrings.validity(keyring, now=now)
    return KeyringState(name=keyrings.NAME, valid=valid, reason=reason, certificate_pem=keyring.pem,
                        not_valid_before=keyring.not_valid_before, not_valid_after=keyring.not_valid_after)
