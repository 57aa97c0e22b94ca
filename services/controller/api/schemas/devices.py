from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from services.controller.api.schemas.common import InputModel


class DeviceCreate(InputModel):
    name: str = Field(min_length=1, max_length=128)
    model: str = Field(default="", max_length=64)
    serial: str = Field(min_length=1, max_length=64)
    ip_address: str = Field(default="", max_length=64)
    fqdn: str = Field(default="", max_length=255)
    #: Base URL of the device's management API (http or https).
    management_url: str = Field(min_length=1, max_length=512)


class DeviceUpdate(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=128)
    model: str | None = Field(default=None, max_length=64)
    #: Move the device (and its trustpoints) to another domain this domain can see.
    domain_id: uuid.UUID | None = None
    weak_crypto: bool | None = None
    #: Enabling weak-crypto reduces security: it needs this confirmation.
    confirm: bool = False


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
    created_at: datetime


class InventoryImport(InputModel):
    #: A device-management API base URL serving ``/api/inventory``.
    inventory_url: str = Field(min_length=1, max_length=512)


class ImportResult(BaseModel):
    imported: int
    skipped: int
