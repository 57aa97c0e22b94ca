"""The device client moved to :mod:`shared.device_client` (the controller's export uses it
too); this module keeps the workers' imports working."""

from shared.device_client import (
    TRANSIENT_CODES,
    TRUSTPOINT_MISSING_CODES,
    DeviceAddress,
    DeviceClient,
    DeviceTransientError,
    HttpDeviceClient,
)

__all__ = [
    "TRANSIENT_CODES", "TRUSTPOINT_MISSING_CODES", "DeviceAddress", "DeviceClient", "DeviceTransientError",
    "HttpDeviceClient",
]
