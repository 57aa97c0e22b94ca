from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel


class ExportAuditPublic(BaseModel):
    """One export of a trustpoint's certificate, as the audit log records it."""

    id: uuid.UUID
    domain_id: uuid.UUID
    device_id: uuid.UUID
    device_name: str
    trustpoint_id: uuid.UUID
    trustpoint_name: str
    format: str
    requested_by: str
    role: str
    outcome: str
    error_code: str | None
    created_at: datetime
