"""The one place that turns errors into RFC 9457 problem responses.

Every error answer is ``application/problem+json``::

    {"type": "urn:certfleet:problem:<code>", "title": "...", "status": 409,
     "detail": "...", "code": "<code>"}

A client's mistake always gets a 4xx with a stable code; anything unexpected becomes a 500
``internal_error`` whose body says nothing about the internals (they go to the log).
"""

from __future__ import annotations

import re
from functools import cache
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, routing
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import AuthError, CertfleetError
from shared.logging import get_logger

log = get_logger(__name__)

MEDIA_TYPE = "application/problem+json"

#: Codes for the HTTP errors the framework raises itself (unknown route, wrong method, a JSON body
#: that is not even text).
_HTTP_CODES = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
               403: "forbidden", 413: "request_too_large"}


def problem(status: int, code: str, detail: str, *, headers: dict[str, str] | None = None,
            **extensions: Any) -> JSONResponse:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": f"urn:certfleet:problem:{code}", "title": title, "status": status,
            "detail": detail, "code": code, **extensions}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


class FieldError(BaseModel):
    """One invalid input of a 422 ``validation_error``: where (``["body", "selection"]``) and what."""

    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """What :func:`problem` sends, for the OpenAPI document. Some problems carry members of their
    own beside the five (a client may ignore those it does not know)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    type: str = Field(description="urn:certfleet:problem:<code>")
    title: str = Field(description="the HTTP status's phrase")
    status: int
    detail: str = Field(description="what went wrong and what to do, for a person")
    code: str = Field(description="stable, for programs: what went wrong")
    errors: list[FieldError] | None = Field(None, description="validation_error: every invalid input")
    limit_bytes: int | None = Field(None, description="request_too_large: the most this route accepts")
    job_id: str | None = Field(None, description="job_in_progress: the unfinished job to wait for")
    selected: int | None = Field(None, description="a confirmation asked for: how many the action would touch")
    devices: int | None = Field(None, description="weak_crypto_confirmation_required: devices it would change")
    device_code: str | None = Field(None, description="device_error: what the device answered")


def certfleet_problem(exc: CertfleetError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 and isinstance(exc, AuthError) else None
    if exc.status >= 500:
        log.warning("request failed", code=exc.code, error=exc.message)
    return problem(exc.status, exc.code, exc.message, headers=headers, **getattr(exc, "extensions", {}))


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def validation_problem(exc: RequestValidationError) -> JSONResponse:
    # Only where and what: pydantic's "input" could echo a secret back.
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()]
    if errors:
        first = errors[0]
        detail = f"{_location(first['loc'])}: {first['msg']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
    else:
        detail = "the request is invalid"
    return problem(422, "validation_error", detail, errors=errors)


def http_problem(exc: StarletteHTTPException, *, allow: str | None = None) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404 and exc.detail in (None, "Not Found"):
        detail = "no such resource: check the path"
    else:
        detail = str(exc.detail)
    headers = getattr(exc, "headers", None)
    if allow:
        headers = {**(headers or {}), "Allow": allow}
        detail = f"{detail}: this resource takes {allow}"
    return problem(exc.status_code, code, detail, headers=headers)


@cache
def _path_pattern(path: str) -> re.Pattern[str]:
    return compile_path(path)[0]


def allowed_methods(app: Any, path: str) -> str:
    """Every method of the resource at ``path``: Starlette's 405 names only those of the first route
    it matched, while each method of a resource is a route of its own here. Where templates overlap
    (``/devices/import`` and ``/devices/{device_id}``) the resource is the most literal one."""
    by_params: dict[int, set[str]] = {}
    for route in routing.iter_route_contexts(app.routes):
        route_path, route_methods = getattr(route, "path", None), getattr(route, "methods", None)
        if route_path and route_methods and _path_pattern(route_path).match(path):
            by_params.setdefault(route_path.count("{"), set()).update(route_methods)
    return ", ".join(sorted(by_params[min(by_params)])) if by_params else ""


def _driver_error(exc: OperationalError | IntegrityError) -> str:
    # The driver's own message only: SQLAlchemy's adds the statement and its parameters.
    return f"{type(exc.orig).__name__}: {exc.orig}"


def database_problem(exc: OperationalError) -> JSONResponse:
    log.error("database unavailable", error=_driver_error(exc))
    return problem(503, "database_unavailable", "the database is unavailable; retry in a moment")


def integrity_problem(exc: IntegrityError) -> JSONResponse:
    # The known races (duplicate names, serials) are mapped where they happen; this is a change
    # that met a concurrent one, e.g. its enrollment object deleted a moment before.
    log.warning("write refused by a database constraint", error=_driver_error(exc))
    return problem(409, "conflict", "the change conflicts with a concurrent change; reload and try again")


class CatchUnexpected:
    """Last line: an exception nobody mapped becomes a 500 problem (logged with its
    traceback) instead of the server's plain-text page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.error("unexpected error", path=scope.get("path"), method=scope.get("method"), exc_info=True)
            if started:
                raise
            response = problem(500, "internal_error", "an unexpected error occurred; it has been logged")
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    async def on_certfleet(_request: Request, exc: CertfleetError) -> JSONResponse:
        return certfleet_problem(exc)

    async def on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(exc)

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        allow = allowed_methods(request.app, request.scope["path"]) if exc.status_code == 405 else None
        return http_problem(exc, allow=allow)

    async def on_database(_request: Request, exc: OperationalError) -> JSONResponse:
        return database_problem(exc)

    async def on_integrity(_request: Request, exc: IntegrityError) -> JSONResponse:
        return integrity_problem(exc)

    app.add_exception_handler(CertfleetError, on_certfleet)
    app.add_exception_handler(IntegrityError, on_integrity)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(OperationalError, on_database)
    app.add_middleware(CatchUnexpected)
