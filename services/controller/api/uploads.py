"""Request bodies that are files: a PKCS#12 upload (multipart form or JSON) and an identity
certificate import (raw PEM/DER or JSON). Each is read with a size cap, so an oversized
body is refused before it is read in full, let alone stored.

These are FastAPI dependencies (async: they read the body); the routes that use them stay
synchronous and do the database work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, SecretStr
from pydantic import ValidationError as PydanticValidationError
from starlette.datastructures import UploadFile

from services.controller.api.schemas.enrollment_objects import Pkcs12Upload
from services.controller.api.schemas.trustpoints import IdentityCertificateImport, PeerValidationRequest
from services.controller.rules.pkcs12_upload import MAX_UPLOAD_BODY, decode_base64
from shared.errors import ValidationError
from shared.pkcs12 import Pkcs12TooLarge

#: Largest identity certificate import: a certificate and a CA chain in PEM fit many times over.
MAX_CERTIFICATE_BODY = 256 * 1024
#: Largest peer validation request: a peer's certificate and a few intermediates in PEM.
MAX_PEER_VALIDATION_BODY = 64 * 1024
#: Media types of a raw certificate body (text/plain: what `curl --data-binary` tools often send).
CERTIFICATE_TYPES = ("application/x-pem-file", "application/pkix-cert", "application/octet-stream",
                     "application/x-x509-ca-cert", "text/plain")


class UnsupportedMediaType(ValidationError):
    code = "unsupported_media_type"
    status = 415


class BodyTooLarge(ValidationError):
    code = "body_too_large"
    status = 413


@dataclass(frozen=True)
class UploadedPkcs12:
    filename: str
    content: bytes = field(repr=False)
    passphrase: SecretStr
    name: str | None = None
    description: str = ""


@dataclass(frozen=True)
class UploadedCertificate:
    certificate: bytes
    ca_certificate: bytes | None = None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_capped(request: Request, limit: int, too_large: ValidationError) -> bytes:
    """The body, refusing it as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


Model = TypeVar("Model", bound=BaseModel)


def _json_model(model: type[Model], body: bytes) -> Model:
    try:
        return model.model_validate_json(body)
    except PydanticValidationError as exc:
        # The same 422 validation_error the framework gives, without echoing the input (a passphrase).
        raise RequestValidationError(
            [{"loc": ("body", *e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()]
        ) from None


async def pkcs12_upload(request: Request) -> UploadedPkcs12:
    too_large = Pkcs12TooLarge(
        f"the upload is larger than any PKCS#12 file of at most 24 KiB can make it (limit {MAX_UPLOAD_BODY} "
        "bytes): leave unneeded certificates out of the file"
    )
    kind = media_type(request)
    if kind == "application/json":
        body = _json_model(Pkcs12Upload, await read_capped(request, MAX_UPLOAD_BODY, too_large))
        return UploadedPkcs12(filename=body.filename, content=decode_base64(body.pkcs12_base64),
                              passphrase=body.passphrase, name=body.name, description=body.description)
    if kind == "multipart/form-data":
        raw = await read_capped(request, MAX_UPLOAD_BODY, too_large)
        return await _form_upload(request, raw)
    raise UnsupportedMediaType(
        f"send the PKCS#12 file as multipart/form-data (fields file and passphrase) or as application/json "
        f"(filename, pkcs12_base64, passphrase), not {kind or 'a body without Content-Type'}"
    )


async def _form_upload(request: Request, raw: bytes) -> UploadedPkcs12:
    async def replay() -> dict:
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception as exc:  # starlette raises its own errors for malformed multipart bodies
        raise ValidationError(f"the multipart form does not parse: {exc}", code="invalid_form") from None
    upload, passphrase = form.get("file"), form.get("passphrase")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ValidationError("the form needs a 'file' field holding the PKCS#12 file, with its file name",
                              code="pkcs12_file_required")
    if not isinstance(passphrase, str):
        raise ValidationError("the form needs a 'passphrase' field: the PKCS#12 file's passphrase",
                              code="passphrase_required")
    name, description = form.get("name"), form.get("description")
    content = await upload.read()
    await form.close()
    return UploadedPkcs12(
        filename=upload.filename, content=content, passphrase=SecretStr(passphrase),
        name=name if isinstance(name, str) and name else None,
        description=description if isinstance(description, str) else "",
    )


async def certificate_upload(request: Request) -> UploadedCertificate:
    too_large = BodyTooLarge(f"the certificate import is larger than {MAX_CERTIFICATE_BODY} bytes; send the "
                             "identity certificate (and its CA certificates) only")
    kind = media_type(request)
    if kind != "application/json" and kind not in CERTIFICATE_TYPES:
        raise UnsupportedMediaType(
            "send the identity certificate as application/x-pem-file (PEM), application/pkix-cert (DER) or "
            f"application/json ({{\"certificate_pem\", \"ca_certificate_pem\"}}), not {kind or 'no Content-Type'}"
        )
    body = await read_capped(request, MAX_CERTIFICATE_BODY, too_large)  # only once the type is one we read
    if kind == "application/json":
        data = _json_model(IdentityCertificateImport, body)
        ca = data.ca_certificate_pem.encode() if data.ca_certificate_pem else None
        return UploadedCertificate(certificate=data.certificate_pem.encode(), ca_certificate=ca)
    if not body.strip():
        raise ValidationError("the body is empty: send the identity certificate in PEM or DER",
                              code="invalid_certificate")
    return UploadedCertificate(certificate=body)


async def peer_validation_request(request: Request) -> PeerValidationRequest:
    """The JSON body of a peer validation, read with a 64 KiB cap."""
    kind = media_type(request)
    if kind != "application/json":
        raise UnsupportedMediaType('send the peer\'s certificate as application/json: {"certificate_pem": …, '
                                   f'"chain_pem": …, "usage": …}}, not {kind or "a body without Content-Type"}')
    too_large = BodyTooLarge(f"a peer validation request is at most {MAX_PEER_VALIDATION_BODY // 1024} KiB; send "
                             "the peer's certificate and its intermediate CA certificates only")
    return _json_model(PeerValidationRequest, await read_capped(request, MAX_PEER_VALIDATION_BODY, too_large))
