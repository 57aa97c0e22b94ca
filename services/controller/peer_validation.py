"""Validate a peer's certificate with a trustpoint's CA: the device decides (chain, validation
usage, key usage, revocation by CRL or OCSP with the trustpoint's settings), so the controller
asks it synchronously, as the PKCS#12 export does, and passes its verdict on. Nothing is stored.
"""

from __future__ import annotations

import uuid

from sqlmodel import Session

from services.controller.crud.trustpoints import get_trustpoint
from services.controller.exports import DeviceProblem
from services.controller.rules.scope import DomainScope
from shared.device_api import PeerValidation
from shared.device_client import DeviceClient, DeviceTransientError
from shared.errors import ConflictError, ExchangeError, ValidationError
from shared.logging import get_logger
from shared.pki import load_certificates
from shared.states import Status

log = get_logger(__name__)


def validate_peer(
    session: Session, *, scope: DomainScope, device_id: uuid.UUID, name: str, certificate_pem: str,
    chain_pem: str | None, usage: str | None, devices: DeviceClient,
) -> PeerValidation:
    trustpoint, device = get_trustpoint(session, scope=scope, device_id=device_id, name=name)
    # A file that is no certificate is the caller's mistake: said here, not as a device error.
    if not load_certificates(certificate_pem):
        raise ValidationError("certificate_pem holds no certificate; send the peer's certificate in PEM",
                              code="invalid_certificate")
    if chain_pem and chain_pem.strip():
        load_certificates(chain_pem)
    if trustpoint.ca_status != Status.AVAILABLE.value:
        raise ConflictError(
            f"trustpoint {name} of device {device.name} has no CA certificate to validate peers with (CA "
            f"certificate {trustpoint.ca_status}); validate once its CA certificate is available",
            code="no_ca_certificate",
        )
    try:
        verdict = devices.validate_peer(device, trustpoint.name, certificate_pem, chain_pem,
                                        usage)  # type: ignore[arg-type]
    except DeviceTransientError as exc:
        raise DeviceProblem(f"{exc.message}; try again", code=exc.code) from None
    except ExchangeError as exc:  # the device refused (4xx) or answered outside the contract
        raise DeviceProblem(f"the device could not validate the certificate with trustpoint {name}: {exc.message}",
                            code="device_error", device_code=exc.code) from None
    log.info("peer certificate validated", device=device.name, trustpoint=trustpoint.name, usage=usage,
             verdict=verdict.verdict, reason=verdict.reason, source=verdict.source)
    return verdict
