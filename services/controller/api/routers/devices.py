from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.controller.alerts import store
from services.controller.api.auth import Principal, authorize
from services.controller.api.deps import Paging, get_now, get_paging, get_scope, get_session, get_settings
from services.controller.api.schemas.alerts import AlertPublic
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.devices import (
    DeviceChanged,
    DeviceCreate,
    DevicePublic,
    DeviceUpdate,
    ImportResult,
    InventoryImport,
)
from services.controller.crud import device_trust
from services.controller.crud import devices as crud
from services.controller.crud.domains import ensure_not_being_deleted
from services.controller.crud.management_endpoints import load_rules
from services.controller.inventory import ImportTrust, import_inventory, limits_from
from services.controller.rules.scope import DomainScope
from shared.clock import utcnow
from shared.enums import AlertCode
from shared.errors import ConflictError
from shared.secrets import SecretBox
from shared.settings import Settings

router = APIRouter(prefix="/domains/{domain_id}/devices", tags=["devices"], dependencies=[Depends(authorize)])


def get_secret_box(request: Request) -> SecretBox:
    return request.app.state.secret_box


def public(device, session: Session) -> DevicePublic:
    """The device as the API shows it, its trust judged against the allow-list as it is now."""
    return DevicePublic.of(device, load_rules(session))


@router.get("", response_model=Page[DevicePublic])
def list_devices(
    serial: str | None = Query(None, max_length=64),
    name: str | None = Query(None, max_length=128, description="exact device name"),
    bundle_version: str | None = Query(None, max_length=32,
                                       description="devices holding this CA-bundle version ('' for none)"),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    paging: Paging = Depends(get_paging),
):
    rows, total = crud.list_devices(session, scope=scope, offset=paging.offset, limit=paging.limit,
                                    serial=serial, name=name, bundle_version=bundle_version)
    rules = load_rules(session)
    return Page[DevicePublic](items=[DevicePublic.of(d, rules) for d in rows], total=total,
                              offset=paging.offset, limit=paging.limit)


@router.post("", response_model=DevicePublic, status_code=201)
def create_device(body: DeviceCreate, scope: DomainScope = Depends(get_scope),
                  session: Session = Depends(get_session), box: SecretBox = Depends(get_secret_box),
                  principal: Principal = Depends(authorize)):
    """Register a device. One an admin registers is trusted at its management URL, and may come with
    its ``endpoint_credential`` (admin only); another role's is trusted only if the URL matches the
    allow-list of management endpoints, until an admin approves it (``POST …/{device_id}/trust``)."""
    ensure_not_being_deleted(session, scope.domain_id, what="registering a device")
    if body.endpoint_credential is not None:
        device_trust.require_admin_for_credential(principal)
    device = crud.create_device(session, scope=scope, data=body)
    if device_trust.vouches(principal):
        device_trust.approve(device, principal=principal, now=utcnow(), credential=body.endpoint_credential, box=box)
    session.commit()
    return public(device, session)


@router.post("/import", response_model=ImportResult)
def import_devices(body: InventoryImport, scope: DomainScope = Depends(get_scope),
                   session: Session = Depends(get_session), box: SecretBox = Depends(get_secret_box),
                   principal: Principal = Depends(authorize), settings: Settings = Depends(get_settings)):
    """Register the inventory's new devices. An admin's import trusts them at their management URLs and
    stores the endpoint credentials the inventory carries; another role's stores no credential, and its
    devices are trusted only where the allow-list matches them."""
    ensure_not_being_deleted(session, scope.domain_id, what="importing devices")
    trust = ImportTrust(principal=principal, box=box) if device_trust.vouches(principal) else None
    try:
        result = import_inventory(session, scope=scope, inventory_url=body.inventory_url, now=utcnow(), trust=trust,
                                  limits=limits_from(settings))
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(
            "some of these devices were registered by another request during the import; nothing was "
            "imported: run the import again", code="duplicate_serial",
        ) from None
    return result


@router.get("/{device_id}", response_model=DevicePublic)
def get_device(device_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
               session: Session = Depends(get_session)):
    return public(crud.get_device(session, scope=scope, device_id=device_id), session)


@router.patch("/{device_id}", response_model=DeviceChanged)
def update_device(device_id: uuid.UUID, body: DeviceUpdate, scope: DomainScope = Depends(get_scope),
                  session: Session = Depends(get_session), now: datetime = Depends(get_now)):
    """Rename the device, switch weak-crypto, or move it (``domain_id``) with its trustpoints and
    certificates. A moved device's trustpoints whose enrollment object the new domain may not use
    each raise an alert (``alerts`` in the answer): delete them, or move the device back."""
    device = crud.update_device(session, scope=scope, device_id=device_id, data=body, now=now)
    session.commit()
    alerts = store.open_alerts(session, (AlertCode.OBJECT_OUT_OF_DOMAIN,), device_id=device.id)
    return DeviceChanged(**public(device, session).model_dump(),
                         alerts=[AlertPublic.of(a) for a in sorted(alerts, key=lambda a: a.trustpoint_name)])


@router.delete("/{device_id}", status_code=204, response_class=Response)
def delete_device(device_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                  session: Session = Depends(get_session)):
    crud.delete_device(session, scope=scope, device_id=device_id)
    session.commit()
    return Response(status_code=204)
