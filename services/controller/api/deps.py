"""FastAPI dependencies: the per-request session, the app's settings and broker, the
domain a request is scoped to, and list paging."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import dramatiq
from fastapi import Depends, Query, Request
from sqlalchemy import select
from sqlmodel import Session

from services.controller.api.auth import Principal, authenticate
from services.controller.api.schemas.common import DEFAULT_PAGE, MAX_PAGE
from services.controller.api.session import get_session
from services.controller.rules.scope import DomainScope, build_scope
from shared.db import plain_rows
from shared.models import Domain
from shared.settings import Settings

__all__ = ["Paging", "get_broker", "get_now", "get_paging", "get_scope", "get_session", "get_settings", "load_scope"]


# The dependencies that only read the request are coroutines: FastAPI runs a plain function on its
# thread pool, a hand-over that costs more than these take.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_now(request: Request) -> datetime:
    """The app's clock (real time, unless a test injected one)."""
    return request.app.state.clock()


async def get_broker(request: Request) -> dramatiq.Broker:
    return request.app.state.broker


def load_scope(session: Session, domain_id: uuid.UUID, *, within: uuid.UUID | None = None) -> DomainScope:
    """The scope of ``domain_id`` (404 when it does not exist, or is not ``within`` or below it).
    Domains are few: one small query."""
    pairs = plain_rows(session, select(Domain.id, Domain.parent_id))
    return build_scope(((row[0], row[1]) for row in pairs), domain_id, within=within)


def get_scope(domain_id: uuid.UUID, session: Session = Depends(get_session),
              principal: Principal = Depends(authenticate)) -> DomainScope:
    """The path's domain, as the caller may reach it: a domain outside the token's home subtree
    answers 404, like one that does not exist, and so does everything addressed through it."""
    return load_scope(session, domain_id, within=principal.domain_id)


@dataclass(frozen=True)
class Paging:
    offset: int
    limit: int


#: Most items a list may skip: past any real list, and within what a database takes as an OFFSET.
MAX_OFFSET = 2**31 - 1


async def get_paging(
    offset: int = Query(0, ge=0, le=MAX_OFFSET, description="items to skip"),
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"page size, at most {MAX_PAGE}"),
) -> Paging:
    return Paging(offset=offset, limit=limit)
