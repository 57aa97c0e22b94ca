"""Overrides of enrollment objects by descendant domains: set, read and cleared in the overriding
domain; kept in step with the object they override (see :mod:`shared.enrollment_overrides`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.controller.crud.enrollment_objects import get_object
from services.controller.rules.enrollment_overrides import base_of, override_values
from services.controller.rules.scope import DomainScope
from shared.enrollment_overrides import effective_object, nearest, secret_target, uses_object_secret
from shared.enums import EnrollmentType
from shared.errors import ConflictError
from shared.models import EnrollmentObject, EnrollmentOverride, Trustpoint
from shared.override_lookup import Applied, applied_in
from shared.secrets import SecretBox

_SECRET_TYPES = {EnrollmentType.EST.value: "password", EnrollmentType.SCEP.value: "challenge_password"}


def _overridable(session: Session, *, scope: DomainScope, object_id: uuid.UUID) -> EnrollmentObject:
    """An object of a strict ancestor of the scope's domain (404 beyond the object's reach, 409 in
    its own domain)."""
    obj = get_object(session, scope=scope, object_id=object_id)
    if obj.domain_id == scope.domain_id:
        raise ConflictError(
            f"enrollment object {obj.name} belongs to this domain: change the object itself "
            f"(PUT /api/v1/domains/{obj.domain_id}/enrollment-objects/{obj.id}); overrides are set in the domains "
            "below it", code="override_in_own_domain")
    return obj


def _stored(session: Session, *, object_id: uuid.UUID, domain_id: uuid.UUID) -> EnrollmentOverride | None:
    return session.exec(select(EnrollmentOverride).where(EnrollmentOverride.enrollment_object_id == object_id,
                                                         EnrollmentOverride.domain_id == domain_id)).first()


def get_override(session: Session, *, scope: DomainScope, object_id: uuid.UUID
                 ) -> tuple[EnrollmentObject, EnrollmentOverride | None]:
    obj = _overridable(session, scope=scope, object_id=object_id)
    return obj, _stored(session, object_id=obj.id, domain_id=scope.domain_id)


def set_override(session: Session, *, scope: DomainScope, object_id: uuid.UUID, data: Any, box: SecretBox,
                 now: datetime) -> tuple[EnrollmentObject, EnrollmentOverride]:
    """Replace the domain's override of the object with ``data``. Its own secret is kept when none
    is sent, unless the merged CA, trust or username change (as an object's); an empty one removes it."""
    obj = _overridable(session, scope=scope, object_id=object_id)
    if not obj.allow_overrides:
        raise ConflictError(
            f"enrollment object {obj.name} does not allow overrides; its domain may allow them "
            f"(allow_overrides in PUT /api/v1/domains/{obj.domain_id}/enrollment-objects/{obj.id})",
            code="overrides_not_allowed")
    base = base_of(obj)
    values = override_values(base, data)
    secret_field = _SECRET_TYPES.get(obj.enrollment_type)
    sent = getattr(data, secret_field) if secret_field else None
    row = _stored(session, object_id=obj.id, domain_id=scope.domain_id)
    if row is None:
        row = EnrollmentOverride(enrollment_object_id=obj.id, domain_id=scope.domain_id, created_at=now)
    elif sent is None and secret_target(base, row.values) != secret_target(base, values):
        row.secret_blob = None  # never sent to a CA, or through a trust, or for a user, it was not given for
    if sent is not None:
        row.secret_blob = box.seal(sent.get_secret_value().encode()) if sent.get_secret_value() else None
    row.values = values
    row.updated_at = now
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # the same override made, or the object deleted, by a concurrent request
        session.rollback()
        raise ConflictError("the override or its enrollment object changed while this request ran; send it again",
                            code="override_changed") from None
    return obj, row


def clear_override(session: Session, *, scope: DomainScope, object_id: uuid.UUID) -> None:
    """Remove the domain's override, if any: its trustpoints get the object's values again."""
    obj = _overridable(session, scope=scope, object_id=object_id)
    row = _stored(session, object_id=obj.id, domain_id=scope.domain_id)
    if row is not None:
        session.delete(row)


def public_values(obj: EnrollmentObject, row: EnrollmentOverride | None) -> dict[str, Any]:
    """What an override answer says besides its values: whether it has its own secret and whether
    the object's secret is used in its domain."""
    if row is None:
        return {"values": {}, "has_secret": False, "uses_object_secret": True, "created_at": None,
                "updated_at": None}
    return {"values": dict(row.values), "has_secret": row.secret_blob is not None,
            "uses_object_secret": row.secret_blob is None and uses_object_secret(base_of(obj), row.values),
            "created_at": row.created_at, "updated_at": row.updated_at}


def applied_to_trustpoint(session: Session, trustpoint: Trustpoint) -> Applied | None:
    """The trustpoint's enrollment object as the trustpoint's domain gets it (None: object gone)."""
    obj = session.get(EnrollmentObject, trustpoint.enrollment_object_id)
    return None if obj is None else applied_in(session, obj, trustpoint.domain_id)


def applied_for_scope(session: Session, scope: DomainScope, objects: list[EnrollmentObject]
                      ) -> dict[uuid.UUID, Applied]:
    """Each object as the scope's domain gets it (one query for all their overrides)."""
    wanted = [o.id for o in objects if o.allow_overrides and o.domain_id != scope.domain_id]
    if not wanted:
        return {o.id: Applied(o) for o in objects}
    rows = session.exec(select(EnrollmentOverride).where(EnrollmentOverride.enrollment_object_id.in_(wanted),
                                                         EnrollmentOverride.domain_id.in_(scope.ancestors))).all()
    by_object: dict[uuid.UUID, dict[uuid.UUID, EnrollmentOverride]] = {}
    for row in rows:
        by_object.setdefault(row.enrollment_object_id, {})[row.domain_id] = row
    applied = {}
    for obj in objects:
        found = nearest(scope.ancestors, obj.domain_id, by_object.get(obj.id, {})) if obj.allow_overrides else None
        applied[obj.id] = Applied(obj) if found is None else Applied(effective_object(obj, found), found)
    return applied
