"""FastAPI dependencies: the per-request session, the app's settings and broker, the
domain a request is scoped to, and list paging."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import dramatiq
from fastapi import Depends, Query, Request
from sqlalchemy import select
from sqlmodel import Session

from services.controller.api.schemas.common import DEFAULT_PAGE, MAX_PAGE
from services.controller.rules.scope import DomainScope, build_scope
from shared.models import Domain
from shared.settings import Settings


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_broker(request: Request) -> dramatiq.Broker:
    return request.app.state.broker


def load_scope(session: Session, domain_id: uuid.UUID) -> DomainScope:
    """The scope of ``domain_id`` (404 when it does not exist). Domains are few: one small query."""
    pairs = session.execute(select(Domain.id, Domain.parent_id)).all()
    return build_scope(((row[0], row[1]) for row in pairs), domain_id)


def get_scope(domain_id: uuid.UUID, session: Session = Depends(get_session)) -> DomainScope:
    return load_scope(session, domain_id)


@dataclass(frozen=True)
class Paging:
    offset: int
    limit: int


def get_paging(
    offset: int = Query(0, ge=0, description="items to skip"),
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"page size, at most {MAX_PAGE}"),
) -> Paging:
    return Paging(offset=offset, limit=limit)
