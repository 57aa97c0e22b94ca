"""The simulated devices' endpoint credentials: each device's is derived from one fleet-wide key,
HMAC-SHA256(key, serial) in hex, so 50,000 devices need no stored credential and a restarted
simulator given the same key holds the same credentials. The inventory hands them out (an admin's
import stores them); a device uses its own to open the secret options certfleet seals to it, and to
prove in its answer that it did (:mod:`shared.sealed_secrets`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_fleet_key() -> str:
    """A random fleet key, for a simulator started without one: its credentials last as long as it runs."""
    return secrets.token_urlsafe(32)


def device_credential(fleet_key: str, serial: str) -> str:
    return hmac.new(fleet_key.encode(), b"certfleet-device-credential:" + serial.encode(), hashlib.sha256).hexdigest()
