"""The allow-list of device management endpoints: what an entry is, as sent and as shown."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.controller.api.schemas.common import InputModel
from services.controller.rules.checks import HOST_OR_NETWORK_PATTERN


class ManagementEndpointCreate(InputModel):
    model_config = ConfigDict(json_schema_extra={
        "x-checked-beyond-schema": [
            "a network's prefix fits its address family, and the address has no host bits past the prefix "
            "(10.20.0.0/16, not 10.20.0.1/16)",
        ],
    })

    scheme: Literal["http", "https"]
    #: A DNS name matched exactly (fw-mgmt.example.net), or an IP address or network in CIDR notation
    #: (10.20.0.0/16, 2001:db8:40::/48). Names are never resolved to match a network.
    host: str = Field(min_length=1, max_length=260, pattern=HOST_OR_NETWORK_PATTERN, examples=["10.20.0.0/16"])
    #: The port; null or absent: any port.
    port: int | None = Field(default=None, ge=1, le=65535)
    description: str = Field(default="", max_length=255)


class ManagementEndpointPublic(BaseModel):
    id: uuid.UUID
    scheme: str
    host: str
    #: null: any port.
    port: int | None
    description: str
    #: The admin who added it (token name and role).
    created_by: str
    created_at: datetime
