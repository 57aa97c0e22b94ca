"""The audit log's one recorder for the API: an ASGI middleware, outermost, so that every request
that may change something (every method but GET, HEAD and OPTIONS under the API's prefix) leaves
an entry, whichever route it is for and however it ended, refusals included: 401 before anyone is
known, 403, 404, 409, 422, and the 413 the body cap answers before routing.

The entry is written once the answer's status is known and before the answer leaves: when a
client has seen a change succeed, its entry is in the database (unless the database refused it,
which is logged: the audit log never turns an answered request into a failed one). It is one
INSERT in a transaction of its own, after the route committed its own. Of the answer only the
problem's ``code`` (a failure) and the ``id`` of what was created (201, 202) are read; of the
request only its method, path and the token's identity, which authentication leaves here
(:func:`identify`). A route adds what its path does not say to :func:`notes`: never a secret.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import anyio
from fastapi import Request
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.controller.audit import store
from services.controller.audit.entries import MAX_READ_ANSWER, Caller, answer_facts, api_entry, filed_under
from services.controller.audit.routes import AuditedRoute, match
from shared.clock import utcnow
from shared.enums import Role

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CALLER = "certfleet.audit.caller"
_DETAILS = "certfleet.audit.details"


def _state(request: Request) -> dict[str, Any]:
    return request.scope.setdefault("state", {})


def identify(request: Request, *, token_id: uuid.UUID | None, name: str, role: Role,
             home_domain_id: uuid.UUID) -> None:
    """The token a request carries was accepted: its entry names it."""
    _state(request)[_CALLER] = Caller(token_id=token_id, name=name, role=Role(role).value,
                                      home_domain_id=home_domain_id)


def notes(request: Request) -> dict[str, Any]:
    """What the request's entry says besides its route and path (e.g. an export's format), for the
    route to fill. Never a secret: entries are shown to every reader of the domain."""
    return _state(request).setdefault(_DETAILS, {})


@dataclass
class _Answer:
    status: int | None = None
    held: list[Message] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    recorded: bool = False


def _reads_answer(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """A failure's problem code, or the id of what a 201/202 created, is in a JSON answer."""
    if not (status >= 400 or status in (201, 202)):
        return False
    content_type = next((value for key, value in headers if key.lower() == b"content-type"), b"")
    return b"json" in content_type


class AuditTrail:
    def __init__(self, app: ASGIApp, *, engine: Engine, routes: list[AuditedRoute], prefix: str,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.app = app
        self.engine = engine
        self.routes = routes
        self.prefix = prefix
        self.clock = clock

    def audits(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] in READ_METHODS:
            return False
        return scope["path"] == self.prefix or scope["path"].startswith(self.prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.audits(scope):
            await self.app(scope, receive, send)
            return
        at = self.clock()
        state = scope.setdefault("state", {})
        answer = _Answer()

        async def record(body: bytes) -> None:
            answer.recorded = True
            make = partial(self._entry, at=at, method=scope["method"], path=scope["path"], state=state,
                           status=answer.status or 500, body=body)
            with anyio.CancelScope(shield=True):  # a client that hung up still leaves its entry
                await anyio.to_thread.run_sync(store.record, self.engine, make)

        async def audited_send(message: Message) -> None:
            if answer.recorded:
                await send(message)
                return
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                if _reads_answer(answer.status, message.get("headers", [])):
                    answer.held.append(message)
                    return
                await record(b"")
                await send(message)
                return
            if message["type"] == "http.response.body" and answer.held:
                answer.held.append(message)
                answer.body += message.get("body", b"")
                more = message.get("more_body", False)
                if more and len(answer.body) <= MAX_READ_ANSWER:
                    return
                await record(b"" if more else bytes(answer.body))
                held, answer.held = answer.held, []
                for part in held:
                    await send(part)
                return
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        finally:
            if not answer.recorded:  # it raised without answering: the server answers 500
                answer.status = None
                await record(b"")

    def _entry(self, session: Session, *, at: datetime, method: str, path: str, state: dict[str, Any],
               status: int, body: bytes):
        route = match(self.routes, method, path)
        caller: Caller | None = state.get(_CALLER)
        code, created = answer_facts(body) if body else (None, None)
        domain_id = filed_under(route.domain_id, caller, lambda: store.domain_parents(session))
        return api_entry(at=at, method=method, route=route, caller=caller, domain_id=domain_id, status=status,
                         error_code=code, created_id=created, details=state.get(_DETAILS, {}))
