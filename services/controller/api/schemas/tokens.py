"""API tokens as the token API takes and shows them: never the token's hash, and the token itself
only once, in the answer that created it."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from services.controller.api.schemas.common import InputModel
from shared.enums import Role
from shared.settings import MAX_TOKEN_LIFETIME_DAYS


class TokenCreate(InputModel):
    #: What the token is for (shown in job history and the token list).
    name: str = Field(default="", max_length=128)
    role: Role
    #: Its home domain: it reaches that domain and those below it. Default: the caller's home domain.
    domain_id: uuid.UUID | None = None
    #: Days it is valid; default CERTFLEET_TOKEN_LIFETIME_DAYS (90).
    lifetime_days: int | None = Field(default=None, ge=1, le=MAX_TOKEN_LIFETIME_DAYS)


class TokenPublic(BaseModel):
    id: uuid.UUID
    name: str
    role: Role
    domain_id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    #: active, expired or revoked.
    state: str


class TokenCreated(TokenPublic):
    #: The token: shown this once, stored only as its hash. Send it as ``Authorization: Bearer <token>``.
    token: str
