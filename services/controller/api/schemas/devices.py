from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, model_validator

from services.controller.api.schemas.alerts import AlertPublic
from services.controller.api.schemas.common import InputModel
from services.controller.rules.checks import FQDN_PATTERN, HTTP_URL_PATTERN, IP_ADDRESS_PATTERN, url_pattern
from shared.endpoint_trust import EndpointRule, TrustBasis, trust_basis

#: A device endpoint credential's length limits (the simulator's are 64 hex digits). Secrets travel
#: sealed to it, so an endpoint that is not the device could try guesses at it offline: no short ones.
CREDENTIAL = {"min_length": 32, "max_length": 256}


class DeviceCreate(InputModel):
    name: str = Field(min_length=1, max_length=128)
    model: str = Field(default="", max_length=64)
    serial: str = Field(min_length=1, max_length=64)
    ip_address: str = Field(default="", max_length=64, json_schema_extra={"pattern": IP_ADDRESS_PATTERN})
    fqdn: str = Field(default="", max_length=255, json_schema_extra={"pattern": FQDN_PATTERN})
    #: Base URL of the device's management API (http or https).
    management_url: str = Field(min_length=1, max_length=512, json_schema_extra={"pattern": HTTP_URL_PATTERN})
    #: The credential the device holds, which its secrets are sealed to (admin only; write-only:
    #: stored encrypted, never shown again). A device an admin registers is trusted at this URL.
    endpoint_credential: SecretStr | None = Field(default=None, **CREDENTIAL)


class DeviceUpdate(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=128)
    model: str | None = Field(default=None, max_length=64)
    #: Move the device (and its trustpoints) to another domain this domain can see.
    domain_id: uuid.UUID | None = None
    weak_crypto: bool | None = None
    #: Enabling weak-crypto reduces security: it needs this confirmation.
    confirm: bool = False


class DeviceTrust(InputModel):
    """An admin vouching for a device's management endpoint, optionally with its credential."""

    #: The credential the device holds (write-only); absent: the stored one, if any, is kept.
    credential: SecretStr | None = Field(default=None, **CREDENTIAL)


class EndpointTrust(BaseModel):
    """Whether certfleet sends the device secrets: its endpoint must be trusted, and it must prove it
    holds its credential when the secret is sent."""

    trusted: bool
    #: "approved" (an admin registered, imported or approved it at this URL), "allow_list" (its URL
    #: matches an allowed management endpoint), or null (not trusted: no secret goes to it).
    basis: TrustBasis | None = None
    #: The admin who vouched for the device at its current URL, and when.
    approved_by: str | None = None
    approved_at: datetime | None = None
    #: Whether certfleet holds the device's credential (the credential itself is never shown).
    has_credential: bool = False


class DeviceKeyring(BaseModel):
    """The device's default keyring as the last health check (or refresh, or regeneration) read it."""

    #: Whether its certificate is valid; null until first read.
    valid: bool | None = None
    #: Why not ("expired", "not yet valid"), else null.
    reason: str | None = None
    not_after: datetime | None = None
    #: When the device was last asked, and why that failed (e.g. "device_unreachable: …"), if it did:
    #: the other fields then hold what the read before found.
    checked_at: datetime | None = None
    error: str | None = None


class DevicePublic(BaseModel):
    id: uuid.UUID
    domain_id: uuid.UUID
    name: str
    model: str
    serial: str
    ip_address: str
    fqdn: str
    management_url: str
    weak_crypto: bool
    #: The version of certfleet's CA bundle the device last confirmed ("" for none yet).
    bundle_version: str = ""
    keyring: DeviceKeyring = Field(default_factory=DeviceKeyring)
    endpoint_trust: EndpointTrust
    created_at: datetime

    @classmethod
    def of(cls, device: Any, rules: list[EndpointRule]) -> DevicePublic:
        """The device as the API shows it, its trust judged against the allow-list ``rules``."""
        return cls.model_validate(device, from_attributes=True, context={"rules": rules})

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any, info: ValidationInfo) -> Any:
        """A device row's health columns, gathered under ``keyring``; its trust under ``endpoint_trust``."""
        if isinstance(data, dict) or not hasattr(data, "health_checked_at"):
            return data
        fields = {name: getattr(data, name) for name in cls.model_fields if name not in ("keyring", "endpoint_trust")}
        rules = (info.context or {}).get("rules", ())
        basis = trust_basis(data, rules)
        approved = basis is TrustBasis.APPROVED
        return {**fields, "keyring": DeviceKeyring(
            valid=data.keyring_valid, reason=data.keyring_reason, not_after=data.keyring_not_after,
            checked_at=data.health_checked_at, error=data.health_error),
            "endpoint_trust": EndpointTrust(
                trusted=basis is not None, basis=basis, approved_by=data.endpoint_approved_by if approved else None,
                approved_at=data.endpoint_approved_at if approved else None,
                has_credential=data.endpoint_credential_blob is not None)}


class DeviceChanged(DevicePublic):
    """A device after a change (``PATCH``), with its open alerts about trustpoints whose enrollment
    object its domain may not use: a move raises one per such trustpoint, a move back clears them."""

    alerts: list[AlertPublic] = Field(default_factory=list)


class InventoryImport(InputModel):
    #: A device-management API base URL serving ``/api/inventory``.
    #: No query or fragment: the import adds its own.
    inventory_url: str = Field(min_length=1, max_length=512, json_schema_extra={"pattern": url_pattern(query=False)})


class ImportResult(BaseModel):
    imported: int
    skipped: int
    #: Devices imported trusted at their management URL (an admin's import), and the endpoint
    #: credentials stored with them (an admin's import of an inventory that carries them; another
    #: role's import stores none).
    approved: int = 0
    credentials: int = 0
