from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from shared.enums import JobKind, JobReason, JobState


class JobStep(BaseModel):
    at: str
    step: str
    detail: str = ""


class JobPublic(BaseModel):
    id: uuid.UUID
    kind: JobKind
    state: JobState
    trustpoint_id: uuid.UUID | None
    trustpoint_name: str
    device_id: uuid.UUID
    domain_id: uuid.UUID
    attempts: int
    max_attempts: int
    error_code: str | None
    error_message: str | None
    steps: list[JobStep]
    batch_id: uuid.UUID | None
    #: operator, bulk, renewal (the scheduler's) or policy (a domain's, e.g. keyring regeneration)
    reason: JobReason = JobReason.OPERATOR
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    lease_expires_at: datetime | None

    @classmethod
    def of(cls, job: Any) -> JobPublic:
        return cls.model_validate(job, from_attributes=True)
