"""Finding the override of an enrollment object that applies in a domain (the database side of
:mod:`shared.enrollment_overrides`).

An object that does not allow overrides has none that apply, so jobs of such objects (most) cost
no query at all; one that does costs one query for its overrides and, when it has any, one for
the domain tree (domains are few).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlmodel import Session, select

from shared.enrollment_overrides import effective_object, nearest, overridden_fields, path_up
from shared.models import Domain, EnrollmentObject, EnrollmentOverride


@dataclass(frozen=True)
class Applied:
    """An enrollment object as it is deployed in one domain."""

    #: The effective object: the stored one, or a detached copy with the override's values.
    obj: EnrollmentObject
    override: EnrollmentOverride | None = None

    @property
    def override_domain_id(self) -> uuid.UUID | None:
        return self.override.domain_id if self.override is not None else None

    @property
    def fields(self) -> list[str]:
        return overridden_fields(self.override.values) if self.override is not None else []


def domain_parents(session: Session) -> dict[uuid.UUID, uuid.UUID | None]:
    return {row[0]: row[1] for row in session.exec(select(Domain.id, Domain.parent_id)).all()}


def applied_in(session: Session, obj: EnrollmentObject, domain_id: uuid.UUID) -> Applied:
    """``obj`` as deployed to trustpoints of ``domain_id``."""
    if not obj.allow_overrides or domain_id == obj.domain_id:
        return Applied(obj)
    rows = session.exec(select(EnrollmentOverride).where(EnrollmentOverride.enrollment_object_id == obj.id)).all()
    if not rows:
        return Applied(obj)
    found = nearest(path_up(domain_parents(session), domain_id), obj.domain_id, {row.domain_id: row for row in rows})
    return Applied(effective_object(obj, found), found)


class OverrideIndex:
    """Every override and the domain tree, read once, for a pass over many trustpoints (the
    revocation scan): empty, and free, when there are no overrides."""

    def __init__(self, overrides: list[EnrollmentOverride], parent_of: dict[uuid.UUID, uuid.UUID | None]) -> None:
        self._by_object: dict[uuid.UUID, dict[uuid.UUID, EnrollmentOverride]] = {}
        for row in overrides:
            self._by_object.setdefault(row.enrollment_object_id, {})[row.domain_id] = row
        self._parent_of = parent_of

    @classmethod
    def load(cls, session: Session) -> OverrideIndex:
        overrides = list(session.exec(select(EnrollmentOverride)).all())
        return cls(overrides, domain_parents(session) if overrides else {})

    def applied_in(self, obj: EnrollmentObject, domain_id: uuid.UUID) -> Applied:
        rows = self._by_object.get(obj.id)
        if not rows or not obj.allow_overrides:
            return Applied(obj)
        found = nearest(path_up(self._parent_of, domain_id), obj.domain_id, rows)
        return Applied(effective_object(obj, found), found)
