"""What an enrollment object's change means for its overrides: a change they cannot follow is
refused, an override's secret whose CA the change moves is dropped, and a deleted object takes
its overrides with it. Used by the object's own replace and delete."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlmodel import Session, select

from services.controller.rules.enrollment_overrides import base_of, merged_columns
from shared.enrollment_overrides import secret_target
from shared.errors import ConflictError, ValidationError
from shared.models import Domain, EnrollmentObject, EnrollmentOverride


def overrides_of(session: Session, object_id: uuid.UUID) -> list[EnrollmentOverride]:
    return list(session.exec(select(EnrollmentOverride).where(EnrollmentOverride.enrollment_object_id == object_id)
                             .order_by(EnrollmentOverride.domain_id)).all())


def _domain_names(session: Session, ids: Iterable[uuid.UUID]) -> str:
    ids = list(ids)
    names = dict(session.exec(select(Domain.id, Domain.name).where(Domain.id.in_(ids))).all())
    return ", ".join(f"{names.get(domain_id, '?')} ({domain_id})" for domain_id in ids)


def follow_object_change(session: Session, obj: EnrollmentObject, columns: dict[str, Any]) -> None:
    """Before ``obj`` takes new ``columns``: refuse a change its overrides cannot follow, and drop an
    override's own secret whose CA, trust or user the change moves.

    - Disallowing overrides, or changing the enrollment type, while overrides exist: 409
      ``overrides_exist`` naming their domains. Deleting them instead would silently change what
      those domains' devices are deployed with next, and lose their secrets: they are cleared first.
    - A change that makes an override invalid (e.g. a renewal window longer than the override's
      validity): 409 ``override_conflict`` naming the domain.
    """
    rows = overrides_of(session, obj.id)
    if not rows:
        return
    where = _domain_names(session, (row.domain_id for row in rows))
    clear = f"clear them first (DELETE /api/v1/domains/{{domain}}/enrollment-objects/{obj.id}/override)"
    if not columns["allow_overrides"]:
        raise ConflictError(f"enrollment object {obj.name} has overrides in domain(s) {where}: it cannot stop "
                            f"allowing overrides while they exist; {clear}", code="overrides_exist")
    if columns["enrollment_type"] != obj.enrollment_type:
        raise ConflictError(f"enrollment object {obj.name} has overrides in domain(s) {where}, made for "
                            f"{obj.enrollment_type} enrollment: its type cannot change while they exist; {clear}",
                            code="overrides_exist")
    before, after = base_of(obj), base_of(columns)
    for row in rows:
        try:
            merged_columns(after, row.values)
        except ValidationError as exc:
            raise ConflictError(
                f"the override of enrollment object {obj.name} in domain {_domain_names(session, [row.domain_id])} "
                f"would not be valid with this change: {exc.message}; change or clear that override "
                f"(PUT or DELETE /api/v1/domains/{row.domain_id}/enrollment-objects/{obj.id}/override) first",
                code="override_conflict") from None
        if row.secret_blob is not None and secret_target(before, row.values) != secret_target(after, row.values):
            row.secret_blob = None
            session.add(row)


def delete_overrides_of(session: Session, object_id: uuid.UUID) -> None:
    for row in overrides_of(session, object_id):
        session.delete(row)
    session.flush()  # before the object's own row goes
