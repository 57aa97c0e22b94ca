"""The audit entries of the commands that change the database directly, without the API
(``certfleet token create|revoke``, ``certfleet secrets rotate``): the operator is the
operating-system user who ran the command, on its host. The entry is added to the command's own
transaction, so the change and its record are committed together or not at all."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.controller.audit.entries import command_entry, local_operator
from shared.clock import utcnow


def record_command(session: Session, *, action: str, domain_id: uuid.UUID, target_id: uuid.UUID | None = None,
                   details: Mapping[str, Any] | None = None, now: datetime | None = None,
                   operator: str | None = None) -> None:
    """Add the entry of a change the command made in ``session``'s transaction (the caller commits)."""
    session.add(command_entry(at=now or utcnow(), action=action, domain_id=domain_id, target_id=target_id,
                              details=details, operator=operator or local_operator(), ok=True))
