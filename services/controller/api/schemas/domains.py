from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from services.controller.api.schemas.bulk_enrollments import BatchProgress
from services.controller.api.schemas.common import InputModel
from services.controller.rules.domain_deletion import DeletionState


class DomainCreate(InputModel):
    name: str = Field(min_length=1, max_length=128)
    #: Defaults to the caller's home domain (Global for most tokens).
    parent_id: uuid.UUID | None = None
    #: Regenerate invalid default keyrings of the domain's devices without an operator; null: as the
    #: parent domain says (off at Global unless set).
    auto_regenerate_keyring: bool | None = None


class DomainUpdate(InputModel):
    #: true or false to set the domain's own policy; null to follow the parent domain again.
    auto_regenerate_keyring: bool | None = None


class DeletionJobs(BatchProgress):
    """The delete jobs of a deletion's latest attempt, counted as any batch's jobs."""

    #: A deletion's jobs are over every enrollment object of the domain's devices: none in particular.
    enrollment_object_id: uuid.UUID | None = None


class DomainDeletionPublic(BaseModel):
    """A leaf domain's deletion: where it stands (``state``, ``detail``), where the devices go, and
    the progress of its delete jobs."""

    domain_id: uuid.UUID
    domain_name: str
    state: DeletionState
    #: What the deletion waits for, or what to do, in words.
    detail: str
    #: Where the devices go when the deletion completes (by default the parent domain).
    target_domain_id: uuid.UUID
    requested_at: datetime
    requested_by: str
    #: Devices in the domain; all of them go to the target domain, with their registration.
    devices: int
    #: Trustpoints still recorded on those devices.
    trustpoints: int
    #: The delete jobs of the latest attempt; null when nothing had to be removed.
    jobs: DeletionJobs | None = None
    #: Once completed: trustpoints forgotten by force (left on their devices), enrollment objects
    #: removed with the domain, API tokens homed there that were revoked.
    forgotten_trustpoints: int = 0
    removed_enrollment_objects: int = 0
    revoked_tokens: int = 0


class DomainPublic(BaseModel):
    id: uuid.UUID
    name: str
    parent_id: uuid.UUID | None
    #: The domain's own setting (null: inherited).
    auto_regenerate_keyring: bool | None = None
    #: The policy in force: the domain's own setting, else its nearest ancestor's, else off.
    effective_auto_regenerate_keyring: bool = False
    #: The domain whose setting is in force (null: no domain up the tree set one, so it is off).
    auto_regenerate_keyring_from: uuid.UUID | None = None
    created_at: datetime
    #: The deletion under way, if one is (``DELETE /domains/{id}``); null otherwise.
    deletion: DomainDeletionPublic | None = None
