"""The installation's allow-list of device management endpoints: list, add, remove, and read as rules."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.controller.api.schemas.management_endpoints import ManagementEndpointCreate
from shared.endpoint_trust import EndpointRule, normalise_host, normalise_scheme
from shared.errors import ConflictError, NotFoundError
from shared.models import ManagementEndpoint


def list_entries(session: Session) -> list[ManagementEndpoint]:
    return list(session.exec(select(ManagementEndpoint).order_by(ManagementEndpoint.scheme, ManagementEndpoint.host,
                                                                  ManagementEndpoint.port)).all())


def load_rules(session: Session) -> list[EndpointRule]:
    """The allow-list as the trust decision reads it (one small query)."""
    rows = session.exec(select(ManagementEndpoint.scheme, ManagementEndpoint.host, ManagementEndpoint.port)).all()
    return [EndpointRule(scheme=scheme, host=host, port=port) for scheme, host, port in rows]


def _describe(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{host}" + (f" port {port}" if port else " (any port)")


def add_entry(session: Session, *, data: ManagementEndpointCreate, created_by: str, now: datetime
              ) -> ManagementEndpoint:
    scheme, host, port = normalise_scheme(data.scheme), normalise_host(data.host), data.port or 0
    duplicate = session.exec(select(ManagementEndpoint.id).where(
        ManagementEndpoint.scheme == scheme, ManagementEndpoint.host == host, ManagementEndpoint.port == port)).first()
    conflict = ConflictError(f"{_describe(scheme, host, port)} is already allowed (entry {duplicate})",
                             code="duplicate_endpoint")
    if duplicate is not None:
        raise conflict
    row = ManagementEndpoint(scheme=scheme, host=host, port=port, description=data.description.strip(),
                             created_by=created_by, created_at=now)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # added by a concurrent request since the check
        session.rollback()
        raise ConflictError(f"{_describe(scheme, host, port)} is already allowed", code="duplicate_endpoint") from None
    return row


def delete_entry(session: Session, *, entry_id: uuid.UUID) -> ManagementEndpoint:
    row = session.get(ManagementEndpoint, entry_id)
    if row is None:
        raise NotFoundError(f"no allowed management endpoint {entry_id}; GET /api/v1/management-endpoints lists them",
                            code="endpoint_not_found")
    session.delete(row)
    return row
