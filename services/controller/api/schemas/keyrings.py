from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, field_validator

from services.controller.api.schemas.bulk_enrollments import BatchProgress, distinct
from services.controller.api.schemas.common import InputModel
from services.controller.api.schemas.devices import DevicePublic
from services.controller.api.schemas.jobs import JobPublic


class KeyringRegenerationCreate(InputModel):
    """Which devices' default keyrings to regenerate: ``device_ids``, or ``all_expired`` (every
    device of the domain subtree with an open F0853 alert or a keyring read invalid)."""

    #: Repeats are dropped; at most 100,000 distinct ids (422 selection_too_large).
    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["device_ids"], "properties": {"device_ids": {"type": "array", "minItems": 1},
                                                    "all_expired": {"const": False}}},
        {"required": ["all_expired"], "properties": {"all_expired": {"const": True}, "device_ids": {"type": "null"}}},
    ]})

    device_ids: list[uuid.UUID] | None = None
    all_expired: bool = False

    _distinct = field_validator("device_ids")(distinct)


class KeyringRegenerationPublic(BatchProgress):
    """A batch of keyring regenerations: ``selected`` devices, ``skipped`` those with a regeneration
    already unfinished."""

    #: About devices: no enrollment object.
    enrollment_object_id: uuid.UUID | None = None
    action: str


class KeyringRegenerationAccepted(BaseModel):
    """One device's regeneration: the device as it is now, and the job that regenerates its keyring."""

    device: DevicePublic
    job: JobPublic
