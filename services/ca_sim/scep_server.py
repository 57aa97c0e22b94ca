"""The CA simulator's SCEP server (RFC 8894) over plain HTTP, as an aiohttp application: the
transport around :class:`.scep_service.ScepService`.

Paths, for the default profile and for ``<label>`` (see :mod:`.scep_dialects`)::

    /cgi-bin/pkiclient.exe   /scep   /<label>/cgi-bin/pkiclient.exe   /<label>/scep   /scep/<label>
        ?operation=GetCACaps       capabilities, text/plain, one per line
        ?operation=GetCACert       the issuing CA and the root, and the RA when there is one: a
                                   certificates-only CMS SignedData, application/x-x509-ca-ra-cert
        ?operation=GetNextCACert   404: the simulator has no CA rollover scheduled
        ?operation=PKIOperation    POST: the DER message as body, whatever the Content-Type (none,
                                   application/octet-stream, application/x-pki-message);
                                   GET: &message=<base64, URL-encoded>, where a space stands for '+'

``message`` is ignored on the other operations. A PKIOperation always gets a CertRep
(application/x-pki-message) unless the message is too broken to say which transaction it
belongs to: then 400 problem+json. Answers are HTTP/1.1 with Content-Length.
"""

from __future__ import annotations

import base64
import binascii
import re

from aiohttp import web

from services.ca_sim.problems import problem_middleware
from services.ca_sim.scep_service import ScepService
from shared.errors import NotFoundError, ValidationError
from shared.protocols.scep import PKI_MESSAGE, FailInfo, ScepDecodeError

#: A pkiMessage is a few KiB (a CSR and two certificates, encrypted and signed).
MAX_MESSAGE_BYTES = 64 * 1024
_LABEL = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
SCEP_PATH = re.compile(
    rf"^(?:/(?P<prefix>{_LABEL}))?/(?:cgi-bin/pkiclient\.exe|scep)(?:/(?P<label>{_LABEL}))?/?$"
)
OPERATIONS = ("GetCACaps", "GetCACert", "GetNextCACert", "PKIOperation")
_BY_LOWER = {op.lower(): op for op in OPERATIONS}
_WHITESPACE = re.compile(r"\s+")


def decode_get_message(message: str) -> bytes:
    """The base64 ``message`` of a GET PKIOperation, after URL decoding. Some clients leave '+'
    unescaped, which URL decoding turns into a space, and break lines every 64 characters."""
    text = _WHITESPACE.sub("", message.replace(" ", "+"))
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ScepDecodeError("the message parameter is not base64; send the DER pkiMessage base64-encoded and "
                              "URL-encoded", fail_info=FailInfo.BAD_REQUEST) from None


def _as_der(body: bytes) -> bytes:
    """POSTed messages are DER; a few clients POST them base64-encoded."""
    if not body:
        raise ScepDecodeError("the PKIOperation body is empty; POST the DER pkiMessage",
                              fail_info=FailInfo.BAD_REQUEST)
    if body[:1] == b"\x30":
        return body
    try:
        return decode_get_message(body.decode("ascii"))
    except (UnicodeDecodeError, ScepDecodeError):
        raise ScepDecodeError("the PKIOperation body is neither a DER pkiMessage nor base64 of one",
                              fail_info=FailInfo.BAD_REQUEST) from None


class ScepHttp:
    def __init__(self, service: ScepService) -> None:
        self.service = service

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        match = SCEP_PATH.match(request.path)
        if not match or (match["prefix"] and match["label"]):
            raise NotFoundError(f"{request.path} is not a SCEP endpoint; use /cgi-bin/pkiclient.exe or /scep, "
                                "optionally with a profile label: /<label>/scep", code="not_found")
        if request.method not in ("GET", "HEAD", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        given = request.query.get("operation", "")
        operation = _BY_LOWER.get(given.lower())
        if operation is None:
            raise ValidationError(f"operation {given!r} is not a SCEP operation; use one of {', '.join(OPERATIONS)}"
                                  if given else f"the operation parameter is missing; use one of "
                                  f"{', '.join(OPERATIONS)}", code="unknown_operation")
        dialect = self.service.dialect(match["label"] or match["prefix"])
        if operation == "GetCACaps":
            return web.Response(body=self.service.capabilities(dialect).encode(),
                                headers={"Content-Type": "text/plain"})
        if operation == "GetCACert":
            body, content_type = self.service.ca_certificates()
            return web.Response(body=body, headers={"Content-Type": content_type})
        if operation == "GetNextCACert":
            raise NotFoundError("no CA rollover is scheduled: there is no next CA certificate yet",
                                code="no_next_ca")
        if request.method == "POST":
            der = _as_der(await _read_body(request))
        else:
            message = request.query.get("message")
            if not message:
                raise ScepDecodeError("a GET PKIOperation carries the base64 pkiMessage in the message parameter",
                                      fail_info=FailInfo.BAD_REQUEST)
            der = decode_get_message(message)
        reply = self.service.pki_operation(der, dialect)
        return web.Response(body=reply, headers={"Content-Type": PKI_MESSAGE})


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_MESSAGE_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_MESSAGE_BYTES, actual_size=request.content_length)
    body = bytearray()
    while chunk := await request.content.read(16384):
        body += chunk
        if len(body) > MAX_MESSAGE_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_MESSAGE_BYTES, actual_size=len(body))
    return bytes(body)


def build_scep_app(service: ScepService) -> web.Application:
    app = web.Application(middlewares=[problem_middleware], client_max_size=MAX_MESSAGE_BYTES + 1)
    app.router.add_route("*", "/{tail:.*}", ScepHttp(service).dispatch)
    return app
