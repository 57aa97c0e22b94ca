from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlmodel import Session

from services.controller.api.auth import Principal, authorize
from services.controller.api.body_limit import accepts_body
from services.controller.api.deps import Paging, get_paging, get_scope, get_session
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.enrollment_objects import (
    EnrollmentObjectCreate,
    EnrollmentObjectPublic,
    EnrollmentObjectUpdate,
    EnrollmentOverridePublic,
    EnrollmentOverrideSet,
    PassphraseUpdate,
    Pkcs12Upload,
)
from services.controller.api.uploads import UploadedPkcs12, pkcs12_upload
from services.controller.crud import enrollment_objects as crud
from services.controller.crud import enrollment_overrides as overrides
from services.controller.rules.pkcs12_upload import MAX_UPLOAD_BODY, check_file, trustpoint_name
from services.controller.rules.scope import DomainScope
from shared.clock import utcnow
from shared.enums import EnrollmentType
from shared.models import EnrollmentObject, EnrollmentOverride
from shared.override_lookup import Applied
from shared.secrets import SecretBox

router = APIRouter(prefix="/domains/{domain_id}/enrollment-objects", tags=["enrollment objects"],
                   dependencies=[Depends(authorize)])


def get_secret_box(request: Request) -> SecretBox:
    return request.app.state.secret_box


_DERIVED = ("has_secret", "has_pkcs12_file", "overridden_fields", "override_domain_id")


def public(obj: EnrollmentObject, applied: Applied | None = None) -> EnrollmentObjectPublic:
    """The object as its domain has it, or with ``applied``: as a descendant domain gets it (an
    override's values, and the secret that would be used there)."""
    shown = applied.obj if applied is not None else obj
    data = {name: getattr(shown, name) for name in EnrollmentObjectPublic.model_fields if name not in _DERIVED}
    return EnrollmentObjectPublic(**data, has_secret=shown.secret_blob is not None,
                                  has_pkcs12_file=shown.pkcs12_blob is not None,
                                  overridden_fields=applied.fields if applied is not None else [],
                                  override_domain_id=applied.override_domain_id if applied is not None else None)


def override_public(obj: EnrollmentObject, domain_id: uuid.UUID, row: EnrollmentOverride | None
                    ) -> EnrollmentOverridePublic:
    return EnrollmentOverridePublic(enrollment_object_id=obj.id, domain_id=domain_id,
                                    **overrides.public_values(obj, row))


@router.get("", response_model=Page[EnrollmentObjectPublic])
def list_objects(
    enrollment_type: EnrollmentType | None = Query(None),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    paging: Paging = Depends(get_paging),
):
    """The objects usable in the domain (its own and its ancestors'), with the values the domain's
    overrides give them."""
    rows, total = crud.list_objects(session, scope=scope, offset=paging.offset, limit=paging.limit,
                                    enrollment_type=enrollment_type)
    applied = overrides.applied_for_scope(session, scope, rows)
    return Page[EnrollmentObjectPublic](items=[public(o, applied[o.id]) for o in rows], total=total,
                                        offset=paging.offset, limit=paging.limit)


@router.post("", response_model=EnrollmentObjectPublic, status_code=201)
def create_object(body: EnrollmentObjectCreate, scope: DomainScope = Depends(get_scope),
                  session: Session = Depends(get_session), box: SecretBox = Depends(get_secret_box),
                  principal: Principal = Depends(authorize)):
    """``ignore_server_validation`` and the CA limits (``ca_concurrency_limit``, ``ca_rate_limit``)
    are for admin only."""
    obj = crud.create_object(session, scope=scope, data=body, box=box, role=principal.role)
    session.commit()
    return public(obj)


@router.post(
    "/pkcs12", response_model=EnrollmentObjectPublic, status_code=201,
    openapi_extra=accepts_body(MAX_UPLOAD_BODY, requestBody={"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file", "passphrase"],
            "properties": {"file": {"type": "string", "format": "binary"}, "passphrase": {"type": "string"},
                           "name": {"type": "string"}, "description": {"type": "string"}},
        }},
        "application/json": {"schema": Pkcs12Upload.model_json_schema()},
    }}),
)
def upload_pkcs12(upload: UploadedPkcs12 = Depends(pkcs12_upload), scope: DomainScope = Depends(get_scope),
                  session: Session = Depends(get_session), box: SecretBox = Depends(get_secret_box)):
    """Upload a PKCS#12 file (at most 24 KiB) with its passphrase: a PKCS12 enrollment object named
    as the file. File and passphrase are kept encrypted, so a failed enrollment is retried after
    correcting the passphrase, without a new upload."""
    check_file(upload.content)
    name = trustpoint_name(upload.filename, upload.name)
    obj = crud.create_pkcs12_object(
        session, scope=scope, name=name, filename=upload.filename, content=upload.content,
        passphrase=upload.passphrase.get_secret_value(), box=box, description=upload.description,
    )
    session.commit()
    return public(obj)


@router.put("/{object_id}/passphrase", response_model=EnrollmentObjectPublic)
def set_passphrase(object_id: uuid.UUID, body: PassphraseUpdate, scope: DomainScope = Depends(get_scope),
                   session: Session = Depends(get_session), box: SecretBox = Depends(get_secret_box)):
    """Correct a PKCS12 object's passphrase; then re-enroll its failed trustpoints."""
    obj = crud.set_passphrase(session, scope=scope, object_id=object_id,
                              passphrase=body.passphrase.get_secret_value(), box=box, now=utcnow())
    session.commit()
    return public(obj)


@router.get("/{object_id}", response_model=EnrollmentObjectPublic)
def get_object(object_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
               session: Session = Depends(get_session)):
    """Read from a descendant domain: the values that domain's trustpoints are deployed with, the
    overridden fields and the domain of the override they come from."""
    obj = crud.get_object(session, scope=scope, object_id=object_id)
    return public(obj, overrides.applied_for_scope(session, scope, [obj])[obj.id])


@router.put("/{object_id}", response_model=EnrollmentObjectPublic)
def replace_object(object_id: uuid.UUID, body: EnrollmentObjectUpdate,
                   scope: DomainScope = Depends(get_scope), session: Session = Depends(get_session),
                   box: SecretBox = Depends(get_secret_box), principal: Principal = Depends(authorize)):
    """Replace every field. A stored password or challenge is dropped when the enrollment URL,
    fingerprint, ignore_server_validation or username change and no new one is given. Only admin
    may turn on ``ignore_server_validation`` or change the CA limits."""
    obj = crud.replace_object(session, scope=scope, object_id=object_id, data=body, box=box, now=utcnow(),
                              role=principal.role)
    session.commit()
    return public(obj)


@router.delete("/{object_id}", status_code=204, response_class=Response)
def delete_object(object_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                  session: Session = Depends(get_session)):
    crud.delete_object(session, scope=scope, object_id=object_id)
    session.commit()
    return Response(status_code=204)


@router.get("/{object_id}/override", response_model=EnrollmentOverridePublic)
def get_override(object_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                 session: Session = Depends(get_session)):
    """This domain's override of an ancestor domain's enrollment object (empty ``values``: none)."""
    obj, row = overrides.get_override(session, scope=scope, object_id=object_id)
    return override_public(obj, scope.domain_id, row)


@router.put("/{object_id}/override", response_model=EnrollmentOverridePublic)
def set_override(object_id: uuid.UUID, body: EnrollmentOverrideSet,  # type: ignore[valid-type]
                 scope: DomainScope = Depends(get_scope), session: Session = Depends(get_session),
                 box: SecretBox = Depends(get_secret_box)):
    """Override some of an ancestor domain's enrollment object's values for this domain's trustpoints
    (and those below it without a nearer override); the object must allow overrides (409
    ``overrides_not_allowed``). Replaces the domain's previous override. The override's own secret
    is write-only; without one, the object's is used only while the override keeps the object's CA,
    trust and username (else its enrollments fail with ``enrollment_secret_missing``)."""
    obj, row = overrides.set_override(session, scope=scope, object_id=object_id, data=body, box=box, now=utcnow())
    session.commit()
    return override_public(obj, scope.domain_id, row)


@router.delete("/{object_id}/override", status_code=204, response_class=Response)
def clear_override(object_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                   session: Session = Depends(get_session)):
    """Stop overriding: the domain's trustpoints get the object's values again from their next job.
    Clearing an override the domain does not have changes nothing."""
    overrides.clear_override(session, scope=scope, object_id=object_id)
    session.commit()
    return Response(status_code=204)
