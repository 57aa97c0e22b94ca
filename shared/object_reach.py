"""Whether a trustpoint may still use its enrollment object.

A domain uses the enrollment objects of itself and its ancestors. A device moved out from under
its trustpoint's object (to a sibling or a parent of the object's domain) keeps its certificates,
but that object may no longer be deployed to it: its values and secrets belong to a domain that no
longer holds the device. Re-enrolling, renewing or installing with it is refused with
:data:`CODE`; deleting the trustpoint (and reading it back from the device) stays allowed.

The one rule the controller (before an action, in the renewal pass, for the move alert) and the
worker (before it sends an object's values to a device) apply.
"""

from __future__ import annotations

import uuid

from sqlmodel import Session

from shared.domains import GLOBAL_DOMAIN_ID
from shared.models import Domain

#: The stable code of every refusal of a trustpoint whose object its domain may not use.
CODE = "enrollment_object_not_usable"


def ancestry(session: Session, domain_id: uuid.UUID) -> tuple[uuid.UUID, ...]:
    """The domain, then its parent, up to the root: a few primary-key reads the session caches."""
    chain: list[uuid.UUID] = []
    current: uuid.UUID | None = domain_id
    while current is not None and current not in chain:  # a cycle in bad data must not loop forever
        chain.append(current)
        row = session.get(Domain, current)
        current = row.parent_id if row is not None else None
    return tuple(chain)


def usable(session: Session, *, object_domain_id: uuid.UUID, domain_id: uuid.UUID) -> bool:
    """Whether a trustpoint in ``domain_id`` may use an object of ``object_domain_id``."""
    if object_domain_id in (domain_id, GLOBAL_DOMAIN_ID):
        return True  # the usual cases, without a query
    return object_domain_id in ancestry(session, domain_id)


def _name(session: Session, domain_id: uuid.UUID) -> str:
    row = session.get(Domain, domain_id)
    return row.name if row is not None else str(domain_id)


def refusal(session: Session, *, trustpoint: str, device: str, object_name: str, object_domain_id: uuid.UUID,
            domain_id: uuid.UUID) -> str | None:
    """Why the trustpoint may not use its object any more, and what to do; None when it may."""
    if usable(session, object_domain_id=object_domain_id, domain_id=domain_id):
        return None
    here, there = _name(session, domain_id), _name(session, object_domain_id)
    return (f"trustpoint {trustpoint} of device {device} was enrolled with enrollment object {object_name} of "
            f"domain {there}, which domain {here} (where the device is now) may not use: its certificates stay, "
            f"but certfleet neither re-enrolls nor renews it with that object. Delete the trustpoint and add one "
            f"with an enrollment object of {here} or a domain above it, or move the device back to {there}")
