"""The CA simulator's revocation endpoints over plain HTTP (``--http-port``), an aiohttp
application; RFC 5280 and RFC 6960 want them unencrypted, since their answers are signed::

    GET  /crl/issuing.crl      the issuing CA's current CRL, DER (application/pkix-crl)
    POST /ocsp                 an OCSP request, DER, Content-Type application/ocsp-request
    GET  /ocsp/<request>       the request base64-encoded (standard or URL-safe alphabet,
                               URL-encoded or not, padding optional)

OCSP is answered with 200 and an OCSP response (application/ocsp-response) whatever the
request held, a malformed one included (``malformedRequest``); only a request over 64 KiB (413)
or of another media type (415) gets a problem+json answer. A CRL that has to be reissued is
built off the event loop: one with 100,000 entries takes a second or so.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import unquote

from aiohttp import web

from services.ca_sim.crl import CRL_LABEL, CrlPublisher
from services.ca_sim.ocsp import MAX_REQUEST_BYTES, OcspAnswer, OcspResponder
from services.ca_sim.problems import problem, problem_middleware
from shared.clock import utcnow
from shared.errors import NotFoundError
from shared.logging import get_logger

log = get_logger("ca.revocation")

CRL_PATH = f"/crl/{CRL_LABEL}.crl"
OCSP_PATH = "/ocsp"
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
PKIX_CRL = "application/pkix-crl"
#: A GET carries the request in its path: base64 of up to 64 KiB, URL-encoded, must fit in the
#: request line (aiohttp's own limit is 8 KiB).
MAX_LINE_BYTES = 3 * MAX_REQUEST_BYTES
_BASE64 = re.compile(r"^[A-Za-z0-9+/=_-]*$")


def decode_get_request(encoded: str) -> bytes | None:
    """The DER request in a GET path segment, or None when it is not base64."""
    text = unquote(encoded).replace(" ", "+").replace("-", "+").replace("_", "/").strip()
    if not _BASE64.fullmatch(text):
        return None
    text = text.rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _too_large(size: int) -> web.Response:
    return problem(413, "request_too_large",
                   f"the OCSP request has {size} bytes; at most {MAX_REQUEST_BYTES} are accepted (one asks about "
                   "one certificate in about 100)")


def _http_date(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


class RevocationHttp:
    def __init__(self, crls: CrlPublisher, responder: OcspResponder) -> None:
        self.crls = crls
        self.responder = responder

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == CRL_PATH:
            if request.method not in ("GET", "HEAD"):
                raise web.HTTPMethodNotAllowed(request.method, ["GET"])
            return await self._crl()
        if path.rstrip("/") == OCSP_PATH or path.startswith(OCSP_PATH + "/"):
            if request.method == "POST":
                return await self._ocsp_post(request)
            if request.method in ("GET", "HEAD"):
                return self._ocsp_get(request)
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        raise NotFoundError(f"{path} is not served here; the CRL is at {CRL_PATH}, the OCSP responder at "
                            f"{OCSP_PATH}", code="not_found")

    async def _crl(self) -> web.Response:
        crl = await asyncio.get_running_loop().run_in_executor(None, self.crls.current)
        max_age = max(0, int((crl.next_update - utcnow()).total_seconds()))
        return web.Response(body=crl.der, content_type=PKIX_CRL, headers={
            "Last-Modified": _http_date(crl.this_update), "Expires": _http_date(crl.next_update),
            "Cache-Control": f"max-age={max_age}",
        })

    async def _ocsp_post(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
            return _too_large(request.content_length)
        given = request.headers.get("Content-Type")
        if given is not None and request.content_type not in (OCSP_REQUEST, "application/octet-stream"):
            return problem(415, "unsupported_media_type",
                           f"an OCSP request is POSTed as {OCSP_REQUEST}, not {request.content_type}")
        body = bytearray()
        while chunk := await request.content.read(16384):
            body += chunk
            if len(body) > MAX_REQUEST_BYTES:
                return _too_large(len(body))
        return self._ocsp(bytes(body), cacheable=False)

    def _ocsp_get(self, request: web.Request) -> web.Response:
        raw = request.raw_path.split("?", 1)[0]
        encoded = raw[len(OCSP_PATH):].lstrip("/")
        if len(encoded) > MAX_LINE_BYTES:
            return _too_large(len(encoded))
        der = decode_get_request(encoded) or b""
        if len(der) > MAX_REQUEST_BYTES:
            return _too_large(len(der))
        return self._ocsp(der, cacheable=True)

    def _ocsp(self, der: bytes, *, cacheable: bool) -> web.Response:
        answer: OcspAnswer = self.responder.answer(der)
        headers = {}
        if answer.serial is not None:
            log.debug("ocsp answered", serial=format(answer.serial, "x"), status=answer.cert_status)
        if cacheable and answer.next_update is not None:
            # RFC 5019 5: a GET answer may be cached until its nextUpdate.
            max_age = max(0, int((answer.next_update - utcnow()).total_seconds()))
            headers["Cache-Control"] = f"max-age={max_age}, public, no-transform, must-revalidate"
        else:
            headers["Cache-Control"] = "no-store"
        return web.Response(body=answer.der, content_type=OCSP_RESPONSE, headers=headers)


def build_revocation_app(crls: CrlPublisher, responder: OcspResponder) -> web.Application:
    app = web.Application(middlewares=[problem_middleware], client_max_size=MAX_REQUEST_BYTES + 1)
    app.router.add_route("*", "/{tail:.*}", RevocationHttp(crls, responder).dispatch)
    return app
