"""Bearer-token authentication and role checks.

Tokens are random strings shown once; the database keeps only their SHA-256. Each token has a
role and a home domain: it acts in that domain and the domains below it, until it expires or is
revoked. Every request looks its token up (one indexed query), so a revocation holds at once on
every controller.

Roles, each including the ones below it:

- ``admin``: domains, tokens, webhooks; and, homed at Global, the installation's settings (CA
  bundle, schedules).
- ``network_admin``: devices, enrollment objects, trustpoints, bulk actions, exports, keyring
  regeneration, acknowledging alerts.
- ``read_only``: reads, and the POSTs that change nothing (validating a peer certificate).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import or_, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from services.controller.api import audit_trail
from services.controller.api.session import get_session
from shared.clock import utcnow
from shared.db import plain_rows
from shared.domains import GLOBAL_DOMAIN_ID
from shared.enums import Role
from shared.errors import AuthError, ForbiddenError
from shared.models import ApiToken

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_bearer = HTTPBearer(auto_error=False, description="An API token from `certfleet token create`.")
#: How stale ``last_used_at`` may get: it is written at most this often per token, so reading
#: the API does not write to the database on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_NEW_TOKEN = ("ask an admin for a new one (POST /api/v1/tokens), or create one with "
              "'certfleet token create'")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's role, name, id and home domain."""

    role: Role
    name: str
    domain_id: uuid.UUID = GLOBAL_DOMAIN_ID
    token_id: uuid.UUID | None = None

    def describe(self) -> str:
        """For job steps and logs: who asked (never the token itself)."""
        return f"{self.name or 'an unnamed token'} ({self.role.value})"

    @property
    def installation_wide(self) -> bool:
        """Homed at Global, the root: reaches every domain and the installation's own settings."""
        return self.domain_id == GLOBAL_DOMAIN_ID


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKEN_PREFIX = "cf_"


def new_token(*, role: Role, name: str = "", domain_id: uuid.UUID = GLOBAL_DOMAIN_ID,
              lifetime: timedelta, now: datetime) -> tuple[str, ApiToken]:
    """A new token and its row (not added to any session): the only time the plain token exists."""
    # A fixed prefix: a token never starts with "-" (which a command line would take for an
    # option), and a leaked one is recognisable to secret scanners.
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(token_hash=hash_token(token), role=Role(role).value, name=name, domain_id=domain_id,
                   created_at=now, expires_at=now + lifetime)
    return token, row


def create_token(session: Session, *, role: Role, name: str = "", domain_id: uuid.UUID = GLOBAL_DOMAIN_ID,
                 lifetime: timedelta = timedelta(days=90), now: datetime | None = None) -> str:
    """Store a new token (the caller commits) and return it."""
    token, row = new_token(role=role, name=name, domain_id=domain_id, lifetime=lifetime, now=now or utcnow())
    session.add(row)
    return token


#: What a request's token check reads of the token's row.
_CHECKED = (ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.domain_id, ApiToken.revoked_at, ApiToken.expires_at,
            ApiToken.last_used_at)


def check_token(session: Session, token: str, *, now: datetime) -> Principal:
    """The caller a token stands for; 401 saying why when it does not stand for anyone."""
    found = plain_rows(session, select(*_CHECKED).where(ApiToken.token_hash == hash_token(token)))
    row = found[0] if found else None
    if row is None:
        raise AuthError("the API token is not valid: create one with 'certfleet token create'")
    if row.revoked_at is not None:
        raise AuthError(f"the API token {row.name or row.id} was revoked on {row.revoked_at:%Y-%m-%d %H:%M} UTC; "
                        + _NEW_TOKEN, code="token_revoked")
    if row.expires_at <= now:
        raise AuthError(f"the API token {row.name or row.id} expired on {row.expires_at:%Y-%m-%d %H:%M} UTC; "
                        + _NEW_TOKEN, code="token_expired")
    if row.last_used_at is None or row.last_used_at <= now - LAST_USED_RESOLUTION:
        _note_use(session, row.id, now=now)
    return Principal(role=Role(row.role), name=row.name, domain_id=row.domain_id, token_id=row.id)


def _note_use(session: Session, token_id: uuid.UUID, *, now: datetime) -> None:
    """Record the use and commit it before the route starts its own work; a busy database only
    delays the record to a later request."""
    stale = now - LAST_USED_RESOLUTION
    try:
        session.execute(update(ApiToken).where(
            ApiToken.id == token_id, or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= stale),
        ).values(last_used_at=now))
        session.commit()
    except OperationalError:
        session.rollback()


def authenticate(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    session: Session = Depends(get_session),
) -> Principal:
    """A valid token, whatever its role: for the few POST routes that only read (validating a
    peer certificate), which every role may call. The audit log names it from here on."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise AuthError("an API token is required: send 'Authorization: Bearer <token>'")
    principal = check_token(session, credentials.credentials, now=request.app.state.clock())
    audit_trail.identify(request, token_id=principal.token_id, name=principal.name, role=principal.role,
                         home_domain_id=principal.domain_id)
    return principal


def _needs(principal: Principal, role: Role, what: str) -> None:
    if not principal.role.includes(role):
        higher = " or admin" if role is Role.NETWORK_ADMIN else ""
        raise ForbiddenError(f"role {principal.role.value} may not {what}; this needs role {role.value}{higher}")


def writes_need(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: any valid token reads; changing something needs ``role`` or higher."""

    async def check(request: Request, principal: Principal = Depends(authenticate)) -> Principal:
        # A coroutine: it only reads the request, which needs no hand-over to the thread pool.
        if request.method not in _READ_METHODS:
            _needs(principal, role, "make this change")
        return principal

    check.__name__ = f"writes_need_{role.value}"
    return check


#: The dependency of most /api/v1 routes: a valid token, and network_admin or admin to write.
authorize = writes_need(Role.NETWORK_ADMIN)


async def require_admin(principal: Principal = Depends(authenticate)) -> Principal:
    """Admin only, whatever the method (tokens)."""
    _needs(principal, Role.ADMIN, "use this")
    return principal


def require_installation_admin(principal: Principal = Depends(require_admin)) -> Principal:
    """For settings of the whole installation (the CA bundle, the scheduler's schedules): an admin
    homed at Global, since they reach every domain's devices."""
    if not principal.installation_wide:
        raise ForbiddenError("this is a setting of the whole installation; it needs role admin homed at the "
                             "Global domain")
    return principal
