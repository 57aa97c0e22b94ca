"""Certificate enrollment objects: usable in their domain and its descendants, editable only
in their own domain, and kept while any trustpoint uses them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.controller.api.schemas.enrollment_objects import EnrollmentObjectCreate, EnrollmentObjectUpdate
from services.controller.crud.domains import ensure_not_being_deleted
from services.controller.crud.object_overrides import delete_overrides_of, follow_object_change
from services.controller.rules.enrollment_objects import (
    changes_where_secret_goes,
    check_admin_only_settings,
    object_columns,
    secret_of,
)
from services.controller.rules.scope import DomainScope
from shared.enums import EnrollmentType, Role
from shared.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from shared.models import EnrollmentObject, Trustpoint
from shared.secrets import SecretBox


def get_object(session: Session, *, scope: DomainScope, object_id: uuid.UUID) -> EnrollmentObject:
    """An object usable in this domain: its own, or an ancestor domain's."""
    obj = session.get(EnrollmentObject, object_id)
    if obj is None or not scope.may_use(obj.domain_id):
        raise NotFoundError(f"enrollment object {object_id} not found in this domain or its ancestors")
    return obj


def _editable(session: Session, *, scope: DomainScope, object_id: uuid.UUID) -> EnrollmentObject:
    obj = get_object(session, scope=scope, object_id=object_id)
    if obj.domain_id != scope.domain_id:
        raise ForbiddenError(
            f"enrollment object {obj.name} belongs to ancestor domain {obj.domain_id}; change it there",
            code="inherited_object",
        )
    return obj


def list_objects(
    session: Session, *, scope: DomainScope, offset: int, limit: int,
    enrollment_type: EnrollmentType | None = None,
) -> tuple[list[EnrollmentObject], int]:
    conditions = [EnrollmentObject.domain_id.in_(scope.ancestors)]
    if enrollment_type is not None:
        conditions.append(EnrollmentObject.enrollment_type == EnrollmentType(enrollment_type).value)
    total = session.exec(select(func.count()).select_from(EnrollmentObject).where(*conditions)).one()
    rows = session.exec(
        select(EnrollmentObject).where(*conditions)
        .order_by(EnrollmentObject.name, EnrollmentObject.id).offset(offset).limit(limit)
    ).all()
    return list(rows), total


def _duplicate_name(name: str) -> ConflictError:
    return ConflictError(f"this domain already has an enrollment object named {name!r}",
                         code="duplicate_name")


def _ensure_unique_name(
    session: Session, *, domain_id: uuid.UUID, name: str, other_than: uuid.UUID | None
) -> None:
    query = select(EnrollmentObject.id).where(EnrollmentObject.domain_id == domain_id,
                                              EnrollmentObject.name == name)
    found = session.exec(query).first()
    if found is not None and found != other_than:
        raise _duplicate_name(name)


def _flush(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:  # the same name stored by a concurrent request since the check
        session.rollback()
        raise _duplicate_name(name) from None


def _trustpoints_using(session: Session, object_id: uuid.UUID) -> int:
    return session.exec(
        select(func.count()).select_from(Trustpoint).where(Trustpoint.enrollment_object_id == object_id)
    ).one()


def create_object(
    session: Session, *, scope: DomainScope, data: EnrollmentObjectCreate, box: SecretBox, role: Role
) -> EnrollmentObject:
    """``role``: the caller's, for the settings only an admin may make."""
    check_admin_only_settings(data, role)
    ensure_not_being_deleted(session, scope.domain_id, what="a new enrollment object")
    columns = object_columns(data)
    _ensure_unique_name(session, domain_id=scope.domain_id, name=data.name, other_than=None)
    secret = secret_of(data)
    obj = EnrollmentObject(domain_id=scope.domain_id, **columns,
                           secret_blob=box.seal(secret.encode()) if secret else None)
    session.add(obj)
    _flush(session, data.name)
    return obj


def replace_object(
    session: Session, *, scope: DomainScope, object_id: uuid.UUID, data: EnrollmentObjectUpdate,
    box: SecretBox, now: datetime, role: Role,
) -> EnrollmentObject:
    obj = _editable(session, scope=scope, object_id=object_id)
    check_admin_only_settings(data, role, stored=obj)
    columns = object_columns(data)
    changes_identity = columns["name"] != obj.name or columns["enrollment_type"] != obj.enrollment_type
    if changes_identity and (in_use := _trustpoints_using(session, obj.id)):
        # A trustpoint is named after its object and keeps its type: they cannot change under it.
        raise ConflictError(
            f"enrollment object {obj.name} is used by {in_use} trustpoint(s): its name and enrollment "
            "type cannot change; delete those trustpoints first or create a new object",
            code="object_in_use",
        )
    _ensure_unique_name(session, domain_id=obj.domain_id, name=data.name, other_than=obj.id)
    follow_object_change(session, obj, columns)
    secret = secret_of(data)
    if columns["enrollment_type"] != obj.enrollment_type:
        obj.secret_blob = None  # a secret belongs to the type it was given for
    elif secret is None and changes_where_secret_goes(obj, columns):
        obj.secret_blob = None  # never sent to a CA, or through a trust, it was not given for
    if secret is not None:
        obj.secret_blob = box.seal(secret.encode()) if secret else None
    for key, value in columns.items():
        setattr(obj, key, value)
    obj.updated_at = now
    session.add(obj)
    _flush(session, data.name)
    return obj


def create_pkcs12_object(
    session: Session, *, scope: DomainScope, name: str, filename: str, content: bytes, passphrase: str,
    box: SecretBox, description: str = "",
) -> EnrollmentObject:
    """A PKCS12 enrollment object holding the (already checked) file and its passphrase,
    both encrypted: a failed enrollment is retried from them without a new upload."""
    ensure_not_being_deleted(session, scope.domain_id, what="a new enrollment object")
    data = EnrollmentObjectCreate(name=name, enrollment_type=EnrollmentType.PKCS12, description=description)
    columns = object_columns(data)
    _ensure_unique_name(session, domain_id=scope.domain_id, name=name, other_than=None)
    obj = EnrollmentObject(domain_id=scope.domain_id, **columns, pkcs12_filename=filename[:255],
                           pkcs12_blob=box.seal(content), secret_blob=box.seal(passphrase.encode()))
    session.add(obj)
    _flush(session, name)
    return obj


def set_passphrase(
    session: Session, *, scope: DomainScope, object_id: uuid.UUID, passphrase: str, box: SecretBox,
    now: datetime,
) -> EnrollmentObject:
    """Correct a PKCS12 object's passphrase; re-enrolling its trustpoints then uses it."""
    obj = _editable(session, scope=scope, object_id=object_id)
    if obj.enrollment_type != EnrollmentType.PKCS12:
        raise ValidationError(
            f"enrollment object {obj.name} is of type {obj.enrollment_type}: only PKCS12 objects have a "
            "passphrase",
            code="not_pkcs12",
        )
    obj.secret_blob = box.seal(passphrase.encode())
    obj.updated_at = now
    session.add(obj)
    return obj


def delete_object(session: Session, *, scope: DomainScope, object_id: uuid.UUID) -> None:
    obj = _editable(session, scope=scope, object_id=object_id)
    in_use = _trustpoints_using(session, obj.id)
    if in_use:
        raise ConflictError(
            f"enrollment object {obj.name} is used by {in_use} trustpoint(s); delete them first",
            code="object_in_use",
        )
    delete_overrides_of(session, obj.id)
    session.delete(obj)
