from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from services.controller.api.schemas.bulk_enrollments import BatchProgress, DeviceSelection
from services.controller.api.schemas.common import InputModel
from services.controller.rules.trustpoint_actions import ACTIONS
from shared.states import Status


class TrustpointFilters(InputModel):
    """Which of the selected devices' trustpoints: every one, or those matching all the filters given."""

    identity_status: Status | None = None
    #: Trustpoints whose identity certificate ends within this many days from now (or has ended).
    expiring_within_days: int | None = Field(default=None, ge=0, le=36_500)


class BulkActionCreate(InputModel):
    #: Checked against the known actions, so an unknown one is refused with its own code.
    action: str = Field(min_length=1, max_length=32, description=f"one of {', '.join(ACTIONS)}",
                        json_schema_extra={"enum": list(ACTIONS)})
    #: The trustpoints acted on are this object's, on the selected devices.
    enrollment_object_id: uuid.UUID
    selection: DeviceSelection
    filters: TrustpointFilters = Field(default_factory=TrustpointFilters)
    #: Destructive actions (delete) need it.
    confirm: bool = False


class BulkActionPublic(BatchProgress):
    """A bulk trustpoint action: ``selected`` trustpoints, ``skipped`` those busy with an unfinished job."""

    action: str
    filters: dict


class BulkWeakCrypto(InputModel):
    selection: DeviceSelection
    weak_crypto: bool
    #: Enabling weak-crypto reduces security: it needs this confirmation.
    confirm: bool = False


class BulkWeakCryptoResult(BaseModel):
    weak_crypto: bool
    #: Devices selected, and those of them whose setting changed (the others had it already).
    selected: int
    changed: int
