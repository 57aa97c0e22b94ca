from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from services.controller.api.schemas.bulk_enrollments import BatchProgress
from services.controller.api.schemas.common import InputModel


class FailedServer(BaseModel):
    server: str
    reason: str


class CertUpdateResult(BaseModel):
    """What ``test`` or ``run-now`` did; ``message`` is the line an operator reads."""

    action: str
    outcome: str
    message: str
    #: The command succeeded (exit status 0).
    ok: bool
    local_version: str
    latest_version: str
    failed_servers: list[FailedServer] = []
    #: The push of a new bundle to the devices (GET /domains/{Global}/jobs?…, or its batch's jobs).
    batch_id: uuid.UUID | None = None
    devices: int = 0


class RunNow(InputModel):
    #: Replace even when connection checks fail (an IPv6-only deployment whose bundle server
    #: answers on IPv4 only).
    force: bool = False


class AutoUpdate(InputModel):
    enabled: bool


class CertUpdateStatus(BaseModel):
    auto_update: bool
    #: "Autoupdate is enabled and set for every day at 09:34 UTC", or "Autoupdate is disabled"
    schedule: str
    #: "CA bundle was last modified 'Thu Sep 15 16:12:35 2022'"
    last_modified_message: str
    version: str
    sha256: str
    certificates: int
    last_modified: datetime | None
    source_url: str
    devices_current: int
    devices_older: int


class CertUpdateAudit(BaseModel):
    id: uuid.UUID
    action: str
    requested_by: str
    outcome: str
    forced: bool
    old_version: str
    new_version: str
    failed_servers: list[FailedServer]
    detail: str
    batch_id: uuid.UUID | None
    created_at: datetime


class CertUpdatePush(BatchProgress):
    """A push of certfleet's CA bundle to the devices (``batch_id`` of run-now, or a drift pass's
    batch): its progress as any batch's, ``selected`` devices."""

    #: A push is about devices alone: no enrollment object.
    enrollment_object_id: uuid.UUID | None = None
    action: str
    #: The bundle version current when the push started (each job pushes the version current then).
    version: str
