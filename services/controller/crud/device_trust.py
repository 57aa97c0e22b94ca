"""An admin vouching for a device's management endpoint, and its endpoint credential.

The approval records who and when, and the management URL it was given for: it holds for that URL
only. The credential is sealed with the installation's secret key and never returned.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import SecretStr

from services.controller.api.auth import Principal
from shared.enums import Role
from shared.errors import ForbiddenError
from shared.models import Device
from shared.secrets import SecretBox


def vouches(principal: Principal) -> bool:
    """Whether what this caller registers is trusted: only an admin's word counts."""
    return principal.role is Role.ADMIN


def require_admin_for_credential(principal: Principal) -> None:
    if not vouches(principal):
        raise ForbiddenError(
            f"role {principal.role.value} may not give a device's endpoint credential; this needs role admin. "
            "Register the device without it, and ask an admin to approve it with its credential "
            "(POST …/devices/{id}/trust)")


def approval(principal: Principal, management_url: str, now: datetime) -> dict[str, object]:
    """The columns of an admin's approval of ``management_url``."""
    return {"endpoint_approved_url": management_url, "endpoint_approved_by": principal.describe(),
            "endpoint_approved_at": now}


def approve(device: Device, *, principal: Principal, now: datetime, credential: SecretStr | None,
            box: SecretBox) -> None:
    """The admin vouches for the device at its current URL; a credential given replaces the stored one."""
    for column, value in approval(principal, device.management_url, now).items():
        setattr(device, column, value)
    if credential is not None:
        device.endpoint_credential_blob = box.seal(credential.get_secret_value().encode())


def withdraw(device: Device) -> None:
    """The approval ends: the device is trusted again only if the allow-list matches it. Its credential
    stays, for a later approval or the allow-list."""
    device.endpoint_approved_url = device.endpoint_approved_by = device.endpoint_approved_at = None
