"""``/api/v1/domains/{d}/devices/{id}/trust``: an admin vouching for a device's management endpoint.

``POST`` approves the device at its current management URL (recording who and when), optionally with
the credential the device holds, which certfleet seals its secrets to; ``DELETE`` withdraws
the approval. Admin only: a network admin's device whose URL the allow-list does not match gets no
secret until an admin approves it."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from sqlmodel import Session

from services.controller.api.auth import Principal, require_admin
from services.controller.api.deps import get_scope, get_session
from services.controller.api.routers.devices import get_secret_box, public
from services.controller.api.schemas.devices import DevicePublic, DeviceTrust
from services.controller.crud import device_trust
from services.controller.crud import devices as crud
from services.controller.rules.scope import DomainScope
from shared.clock import utcnow
from shared.secrets import SecretBox

router = APIRouter(prefix="/domains/{domain_id}/devices", tags=["devices"], dependencies=[Depends(require_admin)])


@router.post("/{device_id}/trust", response_model=DevicePublic)
def approve_device(device_id: uuid.UUID, body: DeviceTrust | None = None, scope: DomainScope = Depends(get_scope),
                   session: Session = Depends(get_session), box: SecretBox = Depends(get_secret_box),
                   principal: Principal = Depends(require_admin)):
    """Approve the device's management endpoint at its current URL (admin), recording who and when; with
    ``credential``, the credential the device holds: its secrets go sealed to it."""
    device = crud.get_device(session, scope=scope, device_id=device_id)
    device_trust.approve(device, principal=principal, now=utcnow(), credential=body.credential if body else None,
                         box=box)
    session.add(device)
    session.commit()
    return public(device, session)


@router.delete("/{device_id}/trust", response_model=DevicePublic)
def withdraw_approval(device_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                      session: Session = Depends(get_session), _: Principal = Depends(require_admin)):
    """Withdraw the approval (admin): the device gets secrets again only if the allow-list matches it."""
    device = crud.get_device(session, scope=scope, device_id=device_id)
    device_trust.withdraw(device)
    session.add(device)
    session.commit()
    return public(device, session)
