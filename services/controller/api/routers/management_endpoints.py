"""``/api/v1/management-endpoints``: the installation's allow-list of device management endpoints.

A device whose management URL matches an entry is trusted with secrets (sealed to its credential, which
it must prove it holds) even if no admin approved it. Any valid token may read the list; only an admin homed at
Global may add or remove entries, since they decide where every domain's secrets may go. An entry
removed stops secrets at once: the workers read the list when each secret is about to be sent."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Response
from sqlmodel import Session

from services.controller.api.auth import Principal, authenticate, require_installation_admin
from services.controller.api.deps import get_session
from services.controller.api.schemas.management_endpoints import ManagementEndpointCreate, ManagementEndpointPublic
from services.controller.crud import management_endpoints as crud
from shared.clock import utcnow
from shared.models import ManagementEndpoint

router = APIRouter(prefix="/management-endpoints", tags=["management endpoints"],
                   dependencies=[Depends(authenticate)])


def public(row: ManagementEndpoint) -> ManagementEndpointPublic:
    return ManagementEndpointPublic(id=row.id, scheme=row.scheme, host=row.host, port=row.port or None,
                                    description=row.description, created_by=row.created_by, created_at=row.created_at)


@router.get("", response_model=list[ManagementEndpointPublic])
def list_endpoints(session: Session = Depends(get_session)):
    """Every allowed management endpoint, by scheme, host and port."""
    return [public(row) for row in crud.list_entries(session)]


@router.post("", response_model=ManagementEndpointPublic, status_code=201)
def add_endpoint(body: ManagementEndpointCreate, session: Session = Depends(get_session),
                 principal: Principal = Depends(require_installation_admin)):
    """Allow a management endpoint (admin homed at Global): a scheme, a host name (matched exactly) or an IP
    network in CIDR notation, and optionally a port."""
    row = crud.add_entry(session, data=body, created_by=principal.describe(), now=utcnow())
    session.commit()
    return public(row)


@router.delete("/{endpoint_id}", status_code=204, response_class=Response)
def delete_endpoint(endpoint_id: uuid.UUID, session: Session = Depends(get_session),
                    _: Principal = Depends(require_installation_admin)):
    """Remove an entry (admin homed at Global): devices it alone trusted get no secret from the next job on."""
    crud.delete_entry(session, entry_id=endpoint_id)
    session.commit()
    return Response(status_code=204)
