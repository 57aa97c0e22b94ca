"""The webhook API's request and answer bodies. The secret is write-only: it is taken on create
and never shown again."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field, SecretStr

from services.controller.api.schemas.common import InputModel
from services.controller.rules.checks import HTTP_URL_PATTERN
from shared.enums import AlertCode, DeliveryState, Severity

#: A webhook secret's length, in characters.
SECRET_MIN, SECRET_MAX = 16, 256


class WebhookCreate(InputModel):
    #: Where the alert events are POSTed: an http:// or https:// URL.
    url: str = Field(max_length=512, json_schema_extra={"pattern": HTTP_URL_PATTERN})
    name: str | None = Field(default=None, max_length=128)
    #: Alert codes to send; empty or left out: every code.
    codes: list[AlertCode] = Field(default_factory=list)
    #: Severities to send; empty or left out: every severity.
    severities: list[Severity] = Field(default_factory=list)
    # SecretStr: hidden should the request model be printed or logged. The minimum is checked
    # by the webhook rules, for a stable error code.
    #: The HMAC-SHA256 key of the deliveries' signature, 16 to 256 characters. Write-only.
    secret: SecretStr = Field(max_length=SECRET_MAX, json_schema_extra={"minLength": SECRET_MIN})
    enabled: bool = True


class WebhookPublic(BaseModel):
    id: uuid.UUID
    domain_id: uuid.UUID
    name: str
    url: str
    codes: list[str]
    severities: list[str]
    enabled: bool
    created_by: str
    created_at: datetime
    #: Deliveries waiting for their (next) attempt, and those given up.
    pending: int
    dead: int


class DeliveryPublic(BaseModel):
    """One entry of a webhook's delivery log."""

    id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    alert_id: uuid.UUID
    state: DeliveryState
    attempts: int
    #: The receiver's last HTTP status; null when it gave none (timeout, refused connection).
    last_status: int | None
    last_error: str
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
