from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from services.controller.api.schemas.common import InputModel


class DomainCreate(InputModel):
    name: str = Field(min_length=1, max_length=128)
    #: Defaults to the Global domain.
    parent_id: uuid.UUID | None = None


class DomainPublic(BaseModel):
    id: uuid.UUID
    name: str
    parent_id: uuid.UUID | None
    created_at: datetime
