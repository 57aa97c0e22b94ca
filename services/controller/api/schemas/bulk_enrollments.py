from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Most distinct devices one selection may name by id.
MAX_DEVICE_IDS = 100_000
#: Largest body of a request carrying a selection: a hundred thousand ids as JSON, even pretty-printed,
#: fit (about 40 bytes each). Larger than the controller's general cap, which it overrides for these routes.
MAX_SELECTION_BODY = 5 << 20


class DeviceSelection(BaseModel):
    """Which devices of the domain subtree: all of them, a list of ids, or a filter."""

    model_config = ConfigDict(extra="forbid")

    all: bool = False
    device_ids: list[uuid.UUID] | None = Field(default=None, max_length=100_000)
    #: Shell-style pattern on the device name: '*' any run of characters, '?' one character.
    name_pattern: str | None = Field(default=None, min_length=1, max_length=128)
    model: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_kind(self) -> DeviceSelection:
        kinds = [self.all, self.device_ids is not None, bool(self.name_pattern or self.model)]
        if sum(kinds) != 1:
            raise ValueError(
                "choose exactly one selection: {\"all\": true}, {\"device_ids\": [...]}, or a filter "
                "with \"name_pattern\" and/or \"model\""
            )
        return self


class BulkEnrollmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enrollment_object_id: uuid.UUID
    selection: DeviceSelection


class FailureGroup(BaseModel):
    error_code: str
    count: int
    #: One of the messages, so an operator sees what the code means without opening a job.
    example_message: str


class BatchProgress(BaseModel):
    """A bulk operation's progress, derived from its jobs: what every kind of batch shows."""

    id: uuid.UUID
    domain_id: uuid.UUID
    enrollment_object_id: uuid.UUID
    trustpoint_name: str
    selection: dict
    selected: int
    skipped: int
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    finished: bool
    failures: list[FailureGroup]
    created_at: datetime
    elapsed_seconds: float
    #: Seconds until the last job ends at the rate seen so far; null before the first ends.
    eta_seconds: float | None


class BulkEnrollmentPublic(BatchProgress):
    """A bulk enrollment: ``selected`` devices, ``skipped`` those that already had the trustpoint."""
