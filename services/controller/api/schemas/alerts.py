from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from shared.alerts import CATALOGUE
from shared.enums import AlertCode, AlertState, Severity


class AlertStateFilter(StrEnum):
    """``state=`` of the alert list: one state, or ``open`` for active and acknowledged ones."""

    ACTIVE = AlertState.ACTIVE.value
    ACKNOWLEDGED = AlertState.ACKNOWLEDGED.value
    CLEARED = AlertState.CLEARED.value
    OPEN = "open"


class AlertPublic(BaseModel):
    """An alert: what is wrong (code, severity, description), what it is about (a device, a
    trustpoint, or a resource such as a CA endpoint), and where it stands."""

    id: uuid.UUID
    code: AlertCode
    #: The code in a few words (the description gives the particulars).
    title: str
    severity: Severity
    description: str
    state: AlertState
    domain_id: uuid.UUID
    device_id: uuid.UUID | None
    device_name: str
    trustpoint_id: uuid.UUID | None
    trustpoint_name: str
    resource: str
    first_seen: datetime
    last_seen: datetime
    #: Who acknowledged it (the API token's name and role), and when.
    acknowledged_by: str
    acknowledged_at: datetime | None
    cleared_at: datetime | None

    @classmethod
    def of(cls, alert: Any) -> AlertPublic:
        return cls.model_validate({**{name: getattr(alert, name) for name in cls.model_fields if name != "title"},
                                   "title": CATALOGUE[AlertCode(alert.code)].title})


class CodeSeverityCount(BaseModel):
    code: AlertCode
    severity: Severity
    count: int


class AlertSummary(BaseModel):
    """The domain's open alerts (active and acknowledged) counted; every code and severity is
    listed, zeros included."""

    total: int
    by_state: dict[str, int]
    by_code: dict[str, int]
    by_severity: dict[str, int]
    #: The (code, severity) pairs that have open alerts, most first.
    by_code_and_severity: list[CodeSeverityCount]
