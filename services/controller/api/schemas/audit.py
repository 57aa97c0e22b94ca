from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from shared.models import AuditEntry


class AuditOutcome(StrEnum):
    OK = "ok"
    FAILED = "failed"


class AuditEntryPublic(BaseModel):
    """One change asked of certfleet, made or refused: when, who, where, what, and how it ended.
    A request body is never recorded, so no secret is ever here."""

    id: uuid.UUID
    at: datetime
    #: The domain the change was addressed to (or the caller's home, when it named none it reaches).
    domain_id: uuid.UUID
    #: "api" (an API token) or "cli" (a command run on the database directly).
    channel: str
    #: The token, when it was accepted (empty for a request refused with 401).
    token_id: uuid.UUID | None
    token_name: str
    role: str
    home_domain_id: uuid.UUID | None
    #: For a command: the operating-system user at the host that ran it.
    operator: str
    #: The route's name (e.g. update_device, export_certificate) or the command's (token_revoke).
    action: str
    method: str
    #: The route's path template; the values are in ``targets``.
    path: str
    targets: dict[str, Any]
    device_id: uuid.UUID | None
    #: The most specific id the entry names: what was created, else the path's last id.
    target_id: uuid.UUID | None
    details: dict[str, Any]
    status: int | None
    outcome: AuditOutcome
    #: The problem's code, when it failed.
    error_code: str | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryPublic:
        return cls.model_validate(entry, from_attributes=True)
