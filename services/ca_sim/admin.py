"""The CA simulator's admin endpoints, next to EST on the same HTTPS port:

    GET  /admin/requests[?status=pending|approved|issued|all]   enrollment requests
    POST /admin/requests/{id}/approve                           let a pending request through

Answered only to clients on loopback that present the token from ``DIR/admin-token``
(``Authorization: Bearer <token>``).
"""

from __future__ import annotations

import hmac
import os
import secrets
from ipaddress import ip_address
from pathlib import Path

from aiohttp import web

from services.ca_sim.pending import PENDING, EnrollmentRequest, RequestStore
from shared.errors import AuthError, ForbiddenError, ValidationError

STATUSES = ("pending", "approved", "issued", "all")


def load_or_create_token(path: Path) -> str:
    """The admin token kept in ``path`` (mode 0600), made on first use."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def public_view(r: EnrollmentRequest) -> dict[str, object]:
    return {
        "id": r.id, "profile": r.profile, "subject": r.subject, "status": r.status,
        "created_at": r.created_at.isoformat(), "updated_at": r.updated_at.isoformat(),
    }


def _is_loopback(remote: str | None) -> bool:
    try:
        addr = ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def add_routes(app: web.Application, store: RequestStore, token: str) -> None:
    def authorize(request: web.Request) -> None:
        if not _is_loopback(request.remote):
            raise ForbiddenError("the CA's admin endpoints answer only on loopback", code="forbidden")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise AuthError("send the token from the state directory's admin-token file as "
                            "'Authorization: Bearer <token>'", code="bad_admin_token")

    async def list_requests(request: web.Request) -> web.Response:
        authorize(request)
        status = request.query.get("status", PENDING)
        if status not in STATUSES:
            raise ValidationError(f"status must be one of {', '.join(STATUSES)}", code="bad_status")
        items = store.list_requests(status=None if status == "all" else status)
        return web.json_response({"items": [public_view(r) for r in items]})

    async def approve(request: web.Request) -> web.Response:
        authorize(request)
        return web.json_response(public_view(store.approve(request.match_info["request_id"])))

    app.router.add_get("/admin/requests", list_requests)
    app.router.add_post("/admin/requests/{request_id}/approve", approve)
