from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.controller.api.schemas.common import InputModel

#: Most distinct devices one selection may name by id.
MAX_DEVICE_IDS = 100_000
#: Largest body of a request carrying a selection: a hundred thousand ids as JSON, even pretty-printed,
#: fit (about 40 bytes each). Larger than the controller's general cap, which it overrides for these routes.
MAX_SELECTION_BODY = 5 << 20
#: Ids a batch's stored selection keeps as examples of a selection by id.
SHOWN_DEVICE_IDS = 10


def distinct(ids: list[uuid.UUID] | None) -> list[uuid.UUID] | None:
    """The ids without repeats, in the order first given: an id sent twice selects its device once."""
    return None if ids is None else list(dict.fromkeys(ids))


def selection_summary(selection: dict) -> dict:
    """A selection as a batch keeps and shows it: a list of ids becomes its number of distinct
    devices (``device_count``) and the first few of them, so a batch of a hundred thousand
    devices is not a hundred thousand ids long. Other selections are small already."""
    ids = selection.get("device_ids")
    if not isinstance(ids, list) or "device_count" in selection:
        return selection
    ids = list(dict.fromkeys(ids))
    return {**selection, "device_ids": ids[:SHOWN_DEVICE_IDS], "device_count": len(ids)}


_NOT_SENT = {"type": "null"}
#: The three ways to select, for the OpenAPI document (the validator below is the check).
_ONE_SELECTION = {"oneOf": [
    {"title": "all", "required": ["all"], "properties": {
        "all": {"const": True}, "device_ids": _NOT_SENT, "name_pattern": _NOT_SENT, "model": _NOT_SENT}},
    {"title": "by id", "required": ["device_ids"], "properties": {
        "all": {"const": False}, "device_ids": {"type": "array", "minItems": 1}, "name_pattern": _NOT_SENT,
        "model": _NOT_SENT}},
    {"title": "by filter", "properties": {"all": {"const": False}, "device_ids": _NOT_SENT}, "anyOf": [
        {"required": ["name_pattern"], "properties": {"name_pattern": {"type": "string"}}},
        {"required": ["model"], "properties": {"model": {"type": "string"}}}]},
]}


class DeviceSelection(InputModel):
    """Which devices of the domain subtree: all of them, a list of ids, or a filter."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_SELECTION)

    all: bool = False
    #: Repeats are dropped; at most MAX_DEVICE_IDS distinct ids (422 selection_too_large).
    device_ids: list[uuid.UUID] | None = None
    #: Shell-style pattern on the device name: '*' any run of characters, '?' one character.
    name_pattern: str | None = Field(default=None, min_length=1, max_length=128)
    model: str | None = Field(default=None, min_length=1, max_length=64)

    _distinct = field_validator("device_ids")(distinct)

    @model_validator(mode="after")
    def _one_kind(self) -> DeviceSelection:
        kinds = [self.all, self.device_ids is not None, bool(self.name_pattern or self.model)]
        if sum(kinds) != 1:
            raise ValueError(
                "choose exactly one selection: {\"all\": true}, {\"device_ids\": [...]}, or a filter "
                "with \"name_pattern\" and/or \"model\""
            )
        return self


class BulkEnrollmentCreate(InputModel):
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
