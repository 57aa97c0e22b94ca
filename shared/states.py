"""The trustpoint state machine.

A trustpoint carries two statuses, one for its CA certificate and one for its identity
certificate. They change only through :func:`transition`, which checks each change
against :data:`ALLOWED` and stamps the time. Pure: no I/O, the clock is passed in.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from shared.errors import InvalidTransition


class Status(StrEnum):
    IN_PROGRESS = "in_progress"
    AVAILABLE = "available"
    FAILED = "failed"
    PENDING = "pending"  # waiting for an operator: a manual CSR, a SCEP request the CA holds
    NOT_APPLICABLE = "not_applicable"  # e.g. a CA-only trustpoint has no identity certificate
    #: The CA revoked the installed identity certificate (found by the revocation scan).
    REVOKED = "revoked"


S = Status

#: from -> the statuses it may move to. Staying put is always allowed (idempotent redelivery).
ALLOWED: dict[Status, frozenset[Status]] = {
    S.IN_PROGRESS: frozenset({S.AVAILABLE, S.FAILED, S.PENDING, S.NOT_APPLICABLE}),
    S.PENDING: frozenset({S.IN_PROGRESS, S.AVAILABLE, S.FAILED}),
    # available -> failed: a refresh finds the certificate gone or expired on the device.
    S.AVAILABLE: frozenset({S.IN_PROGRESS, S.FAILED, S.REVOKED}),
    # revoked -> available: a refresh finds another certificate installed meanwhile.
    S.REVOKED: frozenset({S.IN_PROGRESS, S.FAILED, S.AVAILABLE}),
    # failed -> available: a refresh finds the device did get its certificate after all.
    S.FAILED: frozenset({S.IN_PROGRESS, S.AVAILABLE}),
    S.NOT_APPLICABLE: frozenset({S.IN_PROGRESS}),
}


class HasStatuses(Protocol):
    ca_status: str
    identity_status: str
    error_code: str | None
    error_message: str | None
    status_changed_at: datetime | None


_LABELS = {"ca_status": "CA certificate", "identity_status": "identity certificate"}


def can_move(current: Status | str, target: Status | str) -> bool:
    current, target = Status(current), Status(target)
    return current == target or target in ALLOWED[current]


def check(current: Status | str, target: Status | str, *, which: str) -> None:
    if not can_move(current, target):
        raise InvalidTransition(
            f"{which} status cannot go from {Status(current).value} to {Status(target).value}"
        )


def transition(
    trustpoint: HasStatuses,
    *,
    now: datetime,
    ca: Status | None = None,
    identity: Status | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> bool:
    """Move the trustpoint's statuses; return whether anything changed.

    Both changes are checked before either is applied, so a refused transition leaves the
    trustpoint as it was. A failure must carry an error code and message; any other
    status clears them, unless the status left untouched is still failed.
    """
    targets = {"ca_status": ca, "identity_status": identity}
    for attr, target in targets.items():
        if target is not None:
            check(getattr(trustpoint, attr), target, which=_LABELS[attr])
    # A revoked certificate is explained like a failure: which code, and the reason and time.
    failing = Status.FAILED in (ca, identity) or Status.REVOKED in (ca, identity)
    if failing and not (error_code and error_message):
        raise ValueError("a failed or revoked status needs an error code and a message")
    changed = False
    for attr, target in targets.items():
        if target is not None and getattr(trustpoint, attr) != Status(target).value:
            setattr(trustpoint, attr, Status(target).value)
            changed = True
    if failing:
        new_error = (error_code, error_message)
    elif {Status.FAILED.value, Status.REVOKED.value} & {trustpoint.ca_status, trustpoint.identity_status}:
        # The other status is still failed or revoked: keep the error that explains it.
        new_error = (trustpoint.error_code, trustpoint.error_message)
    else:
        new_error = (None, None)
    if (trustpoint.error_code, trustpoint.error_message) != new_error:
        trustpoint.error_code, trustpoint.error_message = new_error
        changed = True
    if changed:
        trustpoint.status_changed_at = now
    return changed
