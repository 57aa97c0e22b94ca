"""A cap on request bodies, applied before anything reads them.

An ASGI middleware, outside authentication and routing: a body declared larger than the cap
(Content-Length) is refused at once, unread; a body of unknown length (chunked) is counted as
it arrives and refused as soon as it passes the cap. Either way the answer is a 413
``request_too_large`` problem that closes the connection, so the server stops reading the rest.

The cap is ``CERTFLEET_MAX_REQUEST_BYTES``; a route that needs more (a bulk selection of a
hundred thousand device ids) declares its own with :func:`accepts_body`, and gets the larger of
the two. Routes that read files keep their own, finer checks on top (see :mod:`.uploads`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.controller.api.problems import problem

CODE = "request_too_large"
SETTING = "CERTFLEET_MAX_REQUEST_BYTES"
#: The OpenAPI extension on an operation that names the body size the route accepts.
EXTENSION = "x-max-request-bytes"


def accepts_body(max_bytes: int, **openapi_extra: Any) -> dict[str, Any]:
    """``openapi_extra`` for a route whose bodies may be up to ``max_bytes`` (shown in the OpenAPI
    document too)."""
    return {**openapi_extra, EXTENSION: max_bytes}


def route_limits(prefix: str, routers: Iterable[APIRouter]) -> list[tuple[re.Pattern[str], int]]:
    """(path pattern, bytes) of the routes that declared a body size of their own, the routers
    being mounted under ``prefix``."""
    limits = []
    for router in routers:
        for route in router.routes:
            declared = (getattr(route, "openapi_extra", None) or {}).get(EXTENSION)
            if declared:
                limits.append((compile_path(prefix + route.path)[0], int(declared)))
    return limits


def _size(size: int) -> str:
    return f"{size / (1 << 20):g} MiB" if size >= 1 << 20 else f"{size / 1024:g} KiB"


class RequestTooLarge(StarletteHTTPException):
    """Raised into whatever reads past the cap; an HTTP error, so the framework answers it as one."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int,
                 routes: list[tuple[re.Pattern[str], int]] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = routes or []

    def limit_for(self, path: str) -> int:
        for pattern, own in self.routes:
            if pattern.match(path):
                return max(own, self.max_bytes)
        return self.max_bytes

    def message(self, limit: int) -> str:
        if limit == self.max_bytes:
            return (f"the request body is larger than {limit} bytes ({_size(limit)}), the limit {SETTING} sets; "
                    "send less at once, or have the operator raise the setting")
        return (f"the request body is larger than {limit} bytes ({_size(limit)}), the most this route accepts; "
                "send less at once")

    async def refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        # Connection: close, so the server drops the rest of the body instead of reading it.
        response = problem(413, CODE, self.message(limit), headers={"Connection": "close"}, limit_bytes=limit)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            await self.refuse(scope, receive, send, limit)
            return
        received, exceeded, started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise RequestTooLarge(self.message(limit))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's own answer to a body it could not read: ours goes instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await self.refuse(scope, receive, send, limit)
