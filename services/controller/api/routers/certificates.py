"""Per-certificate actions on a trustpoint: the manual CSR and identity certificate import,
and the export (PKCS12 with the whole chain, or the identity certificate as PEM)."""

from __future__ import annotations

import uuid

import dramatiq
from fastapi import APIRouter, Depends, Request, Response
from sqlmodel import Session

from services.controller import exports
from services.controller.api import audit_trail
from services.controller.api.auth import Principal, authorize
from services.controller.api.body_limit import accepts_body
from services.controller.api.deps import get_broker, get_scope, get_session, get_settings
from services.controller.api.routers.trustpoints import _DEVICE_TRUSTPOINTS, _accepted
from services.controller.api.schemas.trustpoints import ExportRequest, IdentityCertificateImport, TrustpointAccepted
from services.controller.api.uploads import (
    CERTIFICATE_TYPES,
    MAX_CERTIFICATE_BODY,
    UploadedCertificate,
    certificate_upload,
)
from services.controller.crud import identity_imports
from services.controller.rules.scope import DomainScope
from shared.clock import utcnow
from shared.device_client import DeviceClient
from shared.settings import Settings

router = APIRouter(prefix="/domains/{domain_id}", tags=["trustpoints"], dependencies=[Depends(authorize)])

_TRUSTPOINT = _DEVICE_TRUSTPOINTS + "/{name}"
_PEM = "application/x-pem-file"


def get_devices(request: Request) -> DeviceClient:
    return request.app.state.devices


def _attachment(content: bytes, media_type: str, filename: str) -> Response:
    return Response(content, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get(_TRUSTPOINT + "/csr", response_class=Response,
            responses={200: {"content": {_PEM: {}}, "description": "the CSR in PEM"}})
def get_csr(device_id: uuid.UUID, name: str, scope: DomainScope = Depends(get_scope),
            session: Session = Depends(get_session)) -> Response:
    """The certificate request a manual trustpoint waits with: get it signed by your CA, then
    import the certificate."""
    trustpoint, csr = identity_imports.csr_of(session, scope=scope, device_id=device_id, name=name)
    return _attachment(csr.encode(), _PEM, f"{trustpoint.name}.csr")


@router.post(
    _TRUSTPOINT + "/identity-certificate", response_model=TrustpointAccepted, status_code=202,
    openapi_extra=accepts_body(MAX_CERTIFICATE_BODY, requestBody={"required": True, "content": {
        **{t: {"schema": {"type": "string", "format": "binary"}} for t in CERTIFICATE_TYPES},
        "application/json": {"schema": IdentityCertificateImport.model_json_schema()},
    }}),
)
def import_identity_certificate(
    device_id: uuid.UUID,
    name: str,
    response: Response,
    upload: UploadedCertificate = Depends(certificate_upload),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings),
    broker: dramatiq.Broker = Depends(get_broker),
    principal: Principal = Depends(authorize),
):
    """Import the identity certificate for a manual trustpoint's CSR (PEM or DER; a PEM may carry
    the CA chain after it). Checked at once; a job installs it on the device."""
    trustpoint, device, job = identity_imports.import_identity(
        session, scope=scope, device_id=device_id, name=name, certificate=upload.certificate,
        ca_certificate=upload.ca_certificate, settings=settings, now=utcnow(),
        requested_by=principal.describe(),
    )
    return _accepted(session, response, scope, trustpoint, device, job, broker)


@router.post(
    _TRUSTPOINT + "/export", response_class=Response,
    responses={200: {"content": {"application/x-pkcs12": {}, _PEM: {}}, "description": "the exported file"}},
)
def export_certificate(
    request: Request,
    device_id: uuid.UUID,
    name: str,
    body: ExportRequest,
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    devices: DeviceClient = Depends(get_devices),
    principal: Principal = Depends(authorize),
) -> Response:
    """Export: ``{"format": "pkcs12", "passphrase": …}`` gives key, identity certificate and CA chain
    (AES-256, PBKDF2); ``{"format": "pem"}`` the identity certificate only. Recorded in the audit log
    with its format (``GET …/audit?action=export_certificate``)."""
    passphrase = body.passphrase.get_secret_value() if body.passphrase is not None else None
    exported = exports.export_certificate(
        session, scope=scope, device_id=device_id, name=name, fmt=body.format, passphrase=passphrase,
        devices=devices, principal=principal, audit=audit_trail.notes(request),
    )
    return _attachment(exported.content, exported.media_type, exported.filename)
