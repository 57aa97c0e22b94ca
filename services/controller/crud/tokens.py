"""API tokens: issued for a home domain and a role, listed, revoked. Shared by the token API and
``certfleet token`` (which works on the database directly, so the first admin token can be made
before any token exists).

A caller issues tokens only for its own subtree and never with a role above its own; it sees and
revokes only the tokens homed in its subtree (others answer 404, as if they did not exist).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, select

from services.controller.api.auth import new_token
from services.controller.crud.domains import ensure_not_being_deleted
from services.controller.rules.scope import DomainScope
from shared.enums import Role
from shared.errors import ForbiddenError, NotFoundError
from shared.models import ApiToken


@dataclass(frozen=True)
class Issuer:
    """Who issues a token: the reach and role of the calling token (the command line has no limit)."""

    reach: DomainScope
    role: Role


def state_of(token: ApiToken, *, now: datetime) -> str:
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.expires_at <= now else "active"


def issue_token(session: Session, *, role: Role, name: str, home: DomainScope, lifetime: timedelta,
                now: datetime, issuer: Issuer | None) -> tuple[str, ApiToken]:
    """Add a token homed at ``home`` (the caller commits); returns the plain token and its row."""
    if issuer is not None:
        if not issuer.reach.sees(home.domain_id):
            raise NotFoundError(f"domain {home.domain_id} not found")
        if not issuer.role.includes(role):
            raise ForbiddenError(f"a {issuer.role.value} token may not create a {Role(role).value} token; "
                                 f"this needs role {Role(role).value}")
    ensure_not_being_deleted(session, home.domain_id, what="a new API token homed there")
    token, row = new_token(role=role, name=name, domain_id=home.domain_id, lifetime=lifetime, now=now)
    session.add(row)
    return token, row


def _within(reach: DomainScope | None):
    return [] if reach is None or reach.is_root else [ApiToken.domain_id.in_(reach.subtree)]


def list_tokens(session: Session, *, reach: DomainScope | None, offset: int, limit: int) -> tuple[list[ApiToken], int]:
    """Tokens homed in ``reach`` (every token without it), newest first."""
    conditions = _within(reach)
    total = session.exec(select(func.count()).select_from(ApiToken).where(*conditions)).one()
    rows = session.exec(select(ApiToken).where(*conditions).order_by(ApiToken.created_at.desc(), ApiToken.id)
                        .offset(offset).limit(limit)).all()
    return list(rows), total


def revoke_token(session: Session, *, token_id: uuid.UUID, reach: DomainScope | None, now: datetime) -> ApiToken:
    """Revoke it from now on (the caller commits). Revoking a revoked token changes nothing."""
    token = session.get(ApiToken, token_id, with_for_update=True)
    if token is None or (reach is not None and not reach.sees(token.domain_id)):
        raise NotFoundError(f"API token {token_id} not found", code="token_not_found")
    if token.revoked_at is None:
        token.revoked_at = now
        session.add(token)
    return token
