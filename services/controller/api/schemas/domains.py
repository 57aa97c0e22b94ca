from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from services.controller.api.schemas.common import InputModel


class DomainCreate(InputModel):
    name: str = Field(min_length=1, max_length=128)
    #: Defaults to the caller's home domain (Global for most tokens).
    parent_id: uuid.UUID | None = None
    #: Regenerate invalid default keyrings of the domain's devices without an operator; null: as the
    #: parent domain says (off at Global unless set).
    auto_regenerate_keyring: bool | None = None


class DomainUpdate(InputModel):
    #: true or false to set the domain's own policy; null to follow the parent domain again.
    auto_regenerate_keyring: bool | None = None


class DomainPublic(BaseModel):
    id: uuid.UUID
    name: str
    parent_id: uuid.UUID | None
    #: The domain's own setting (null: inherited).
    auto_regenerate_keyring: bool | None = None
    #: The policy in force: the domain's own setting, else its nearest ancestor's, else off.
    effective_auto_regenerate_keyring: bool = False
    #: The domain whose setting is in force (null: no domain up the tree set one, so it is off).
    auto_regenerate_keyring_from: uuid.UUID | None = None
    created_at: datetime
