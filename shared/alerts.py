"""Alerts as consumers see them: the catalogue of codes, the CloudEvents 1.0 that carry an
alert's changes, and the HMAC-SHA256 signature on every webhook delivery.

Pure functions and constants: the controller writes alerts and events with them, and a consumer
(``certfleet alerts watch``, the sample consumer, a test) checks what it receives with them.

Webhook signature: the headers ``Certfleet-Timestamp`` (Unix seconds) and ``Certfleet-Signature``
(``v1=`` and the hex HMAC-SHA256, keyed with the webhook's secret, of the timestamp, a full stop
and the raw body bytes). A receiver recomputes it over the body it got, compares in constant
time, and refuses a timestamp far from its own clock (a replayed delivery).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime

from shared.enums import AlertCode, AlertState, Severity

SPEC_VERSION = "1.0"
#: The CloudEvents ``source`` of every alert event.
SOURCE = "/certfleet/alerts"
TYPE_PREFIX = "io.certfleet.alert."
#: The changes an alert goes through; each is a CloudEvent type (``io.certfleet.alert.raised``).
CHANGES = ("raised", "updated", "acknowledged", "cleared")

SIGNATURE_HEADER = "Certfleet-Signature"
TIMESTAMP_HEADER = "Certfleet-Timestamp"
EVENT_ID_HEADER = "Certfleet-Event-Id"
#: A delivery whose timestamp is further than this from the receiver's clock is refused.
SIGNATURE_TOLERANCE_SECONDS = 300


@dataclass(frozen=True)
class CodeInfo:
    severity: Severity
    #: What the alert is, in a few words (the description adds the particulars).
    title: str


CATALOGUE: dict[AlertCode, CodeInfo] = {
    AlertCode.KEYRING_EXPIRED: CodeInfo(Severity.MAJOR, "default keyring's certificate is invalid"),
    AlertCode.CERTIFICATE_EXPIRING: CodeInfo(Severity.WARNING, "identity certificate expiring"),
    AlertCode.CERTIFICATE_EXPIRED: CodeInfo(Severity.CRITICAL, "identity certificate expired"),
    AlertCode.CERTIFICATE_REVOKED: CodeInfo(Severity.CRITICAL, "identity certificate revoked"),
    AlertCode.ENROLLMENT_FAILED: CodeInfo(Severity.MAJOR, "enrollment failed"),
    AlertCode.RENEWAL_FAILED: CodeInfo(Severity.MAJOR, "renewal failed"),
    AlertCode.CA_UNREACHABLE: CodeInfo(Severity.MAJOR, "CA unreachable"),
    AlertCode.CA_BUNDLE_UPDATE_FAILED: CodeInfo(Severity.MINOR, "CA bundle update failed"),
    AlertCode.OBJECT_OUT_OF_DOMAIN: CodeInfo(Severity.MAJOR, "enrollment object not usable in the device's domain"),
}


def keyring_description(reason: str | None) -> str:
    """F0853's description, in the device's own words."""
    return f"default Keyring's certificate is invalid, reason: {reason or 'expired'}"


@dataclass(frozen=True)
class AlertCondition:
    """A condition that holds now, as a check found it: the alert it calls for."""

    code: AlertCode
    description: str
    domain_id: uuid.UUID
    severity: Severity | None = None
    device_id: uuid.UUID | None = None
    device_name: str = ""
    trustpoint_id: uuid.UUID | None = None
    trustpoint_name: str = ""
    #: What the alert is about when it is no device or trustpoint (a CA endpoint, a bundle source).
    resource: str = ""

    @property
    def key(self) -> str:
        """The condition's identity: one open alert per key."""
        return condition_key(self.code, self.device_id, self.trustpoint_id, self.resource)

    @property
    def effective_severity(self) -> Severity:
        return self.severity if self.severity is not None else CATALOGUE[self.code].severity


def condition_key(code: str, device_id: uuid.UUID | None, trustpoint_id: uuid.UUID | None, resource: str) -> str:
    return f"{code}|{device_id or ''}|{trustpoint_id or ''}|{resource}"


def event_type(change: str) -> str:
    if change not in CHANGES:
        raise ValueError(f"unknown alert change {change!r}")
    return TYPE_PREFIX + change


def alert_data(alert) -> dict:
    """An alert (a :class:`shared.models.Alert`) as JSON, the ``data`` of its events and the API's answer."""
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": str(alert.id), "code": alert.code, "severity": alert.severity, "description": alert.description,
        "state": alert.state, "domain_id": str(alert.domain_id),
        "device_id": str(alert.device_id) if alert.device_id else None, "device_name": alert.device_name,
        "trustpoint_id": str(alert.trustpoint_id) if alert.trustpoint_id else None,
        "trustpoint_name": alert.trustpoint_name, "resource": alert.resource,
        "first_seen": iso(alert.first_seen), "last_seen": iso(alert.last_seen),
        "acknowledged_by": alert.acknowledged_by, "acknowledged_at": iso(alert.acknowledged_at),
        "cleared_at": iso(alert.cleared_at),
    }


def cloudevent(alert, *, change: str, event_id: uuid.UUID, time: datetime) -> dict:
    """The CloudEvent (structured JSON) of one change of ``alert``; ``subject`` is the alert's id."""
    return {
        "specversion": SPEC_VERSION,
        "id": str(event_id),
        "source": SOURCE,
        "type": event_type(change),
        "time": time.isoformat().replace("+00:00", "Z"),
        "subject": str(alert.id),
        "datacontenttype": "application/json",
        "data": alert_data(alert),
    }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Certfleet-Signature`` header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: str, *, timestamp: str, signature: str, body: bytes, now: float,
           tolerance: float = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """True when ``signature`` is ``body``'s, made with ``secret``, at a time within ``tolerance`` of ``now``."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature or "")


def open_states() -> tuple[str, str]:
    """States of an alert whose condition has not ended."""
    return (AlertState.ACTIVE.value, AlertState.ACKNOWLEDGED.value)
