"""The one place that turns errors into HTTP answers (RFC 9457 problem+json) for the CA
simulator's endpoints, and that decides each error's HTTP status (the EST codec's errors carry
a code only). A client's mistake is a 4xx with a stable code; only our own bugs are 500."""

from __future__ import annotations

import json
from http import HTTPStatus

from aiohttp import web

from shared.errors import AuthError, CertfleetError, ConflictError, NotFoundError, ValidationError
from shared.logging import get_logger
from shared.protocols.est import EstError

log = get_logger("ca.http")

#: RFC 7030 3.2.3: a 401 names the scheme the client should use.
WWW_AUTHENTICATE = 'Basic realm="certfleet EST", charset="UTF-8"'


def problem(status: int, code: str, detail: str, *, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "about:blank", "title": _title(status), "status": status, "code": code, "detail": detail}
    return web.Response(
        status=status, body=json.dumps(body).encode(),
        headers={"Content-Type": "application/problem+json", **(headers or {})},
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


#: EST refusals that are not a plain bad request (400), by their code.
EST_STATUS = {"unsupported_media_type": 415, "body_too_large": 413}


def status_of(exc: CertfleetError) -> int:
    if isinstance(exc, EstError):
        return EST_STATUS.get(exc.code, 400)
    if isinstance(exc, ValidationError):
        return 400  # RFC 7030 answers a bad request with 400, not 422
    if isinstance(exc, AuthError | NotFoundError | ConflictError):
        return exc.status
    return 500


@web.middleware
async def problem_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CertfleetError as exc:
        status = status_of(exc)
        headers = None
        if status == 401:
            admin = request.path.startswith("/admin/")
            headers = {"WWW-Authenticate": 'Bearer realm="certfleet CA admin"' if admin else WWW_AUTHENTICATE}
        if status >= 500:
            log.error("request failed", path=request.path, code=exc.code, error=exc.message)
        else:
            log.info("request refused", path=request.path, status=status, code=exc.code, reason=exc.message)
        return problem(status, exc.code, exc.message, headers=headers)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error", path=request.path)
        return problem(500, "internal_error", "the CA simulator failed; see its log")
