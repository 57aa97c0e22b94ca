"""Validating a peer's certificate with a trustpoint's CA. A POST that changes nothing: every
role may call it, read_only included (hence its own router, authenticated but not write-gated)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from sqlmodel import Session

from services.controller import peer_validation
from services.controller.api.auth import authenticate
from services.controller.api.body_limit import accepts_body
from services.controller.api.deps import get_scope, get_session
from services.controller.api.routers.certificates import get_devices
from services.controller.api.routers.trustpoints import _DEVICE_TRUSTPOINTS
from services.controller.api.schemas.trustpoints import PeerValidationRequest, PeerValidationResult
from services.controller.api.uploads import MAX_PEER_VALIDATION_BODY, peer_validation_request
from services.controller.rules.scope import DomainScope
from shared.device_client import DeviceClient

router = APIRouter(prefix="/domains/{domain_id}", tags=["trustpoints"], dependencies=[Depends(authenticate)])


@router.post(
    _DEVICE_TRUSTPOINTS + "/{name}/validate", response_model=PeerValidationResult,
    openapi_extra=accepts_body(MAX_PEER_VALIDATION_BODY, requestBody={"required": True, "content": {
        "application/json": {"schema": PeerValidationRequest.model_json_schema()}}}),
)
def validate_peer_certificate(
    device_id: uuid.UUID,
    name: str,
    body: PeerValidationRequest = Depends(peer_validation_request),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    devices: DeviceClient = Depends(get_devices),
) -> PeerValidationResult:
    """Validate a peer's certificate (and the intermediates it sends) with the trustpoint's CA, as the
    device would a VPN peer's: ``valid``, ``revoked``, ``unknown`` or ``invalid``, with the reason and
    which revocation source answered. Asks the device synchronously."""
    verdict = peer_validation.validate_peer(
        session, scope=scope, device_id=device_id, name=name, certificate_pem=body.certificate_pem,
        chain_pem=body.chain_pem, usage=body.usage, devices=devices,
    )
    return PeerValidationResult.model_validate(verdict.model_dump())
