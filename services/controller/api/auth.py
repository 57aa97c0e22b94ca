"""Bearer-token authentication and role checks.

Tokens are random strings shown once; the database keeps only their SHA-256. Admin and
Network Admin may change things; Read Only may only read.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session, select

from services.controller.api.deps import get_session
from shared.enums import Role
from shared.errors import AuthError, ForbiddenError
from shared.models import ApiToken

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_bearer = HTTPBearer(auto_error=False, description="An API token from `certfleet token create`.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's role and the name it was given."""

    role: Role
    name: str

    def describe(self) -> str:
        """For job steps and logs: who asked (never the token itself)."""
        return f"{self.name or 'an unnamed token'} ({self.role.value})"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKEN_PREFIX = "cf_"


def create_token(session: Session, *, role: Role, name: str = "") -> str:
    """Store a new token for ``role`` (the caller commits) and return it: the only time the
    plain token exists anywhere."""
    # A fixed prefix: a token never starts with "-" (which a command line would take for an
    # option), and a leaked one is recognisable to secret scanners.
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(token_hash=hash_token(token), role=Role(role).value, name=name))
    return token


class TokenCache:
    """Known token hashes, kept briefly so a busy dashboard does not query per request.

    Only hits are cached: a token created a moment ago works at once.
    """

    def __init__(self, ttl_seconds: float = 30.0) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(token_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, token_hash: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) > 10_000:  # tokens are few; this only bounds abuse
                self._entries.clear()
            self._entries[token_hash] = (time.monotonic() + self._ttl, principal)


def lookup_token(session: Session, token: str, *, cache: TokenCache) -> Principal | None:
    token_hash = hash_token(token)
    principal = cache.get(token_hash)
    if principal is None:
        row = session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash)).first()
        if row is None:
            return None
        principal = Principal(role=Role(row.role), name=row.name)
        cache.put(token_hash, principal)
    return principal


def authenticate(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    session: Session = Depends(get_session),
) -> Principal:
    """A valid token, whatever its role: for the few POST routes that only read (validating a
    peer certificate), which every role may call."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise AuthError("an API token is required: send 'Authorization: Bearer <token>'")
    principal = lookup_token(session, credentials.credentials, cache=request.app.state.token_cache)
    if principal is None:
        raise AuthError("the API token is not valid: create one with 'certfleet token create'")
    return principal


def authorize(request: Request, principal: Principal = Depends(authenticate)) -> Principal:
    """The dependency every other /api/v1 route has: a valid token, and a writer's role to write."""
    if request.method not in _READ_METHODS and not principal.role.can_write:
        raise ForbiddenError(
            f"role {principal.role.value} may only read; admin or network_admin may make changes"
        )
    return principal


def require_admin(principal: Principal = Depends(authorize)) -> Principal:
    """For settings of the whole installation (the scheduler's schedules): admin only."""
    if principal.role is not Role.ADMIN:
        raise ForbiddenError(f"role {principal.role.value} may not change this; only admin may")
    return principal
