"""Export Certificate: PEM (the identity certificate only, from the database) or PKCS12 (key,
identity certificate and whole chain). The key never leaves the device except
inside the passphrase-encrypted PKCS#12 the device makes, so that export asks the device,
synchronously, through the same device client the workers use.

Every export is in the audit log, as every POST is (who, when, which device and trustpoint, and
how it ended); the export adds its format, the device's name and the trustpoint's id to the entry.
A PKCS#12 passphrase is never stored or logged.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, select

from services.controller.api.auth import Principal
from services.controller.crud.trustpoints import get_trustpoint
from services.controller.rules.scope import DomainScope
from shared.device_client import DeviceClient, DeviceTransientError
from shared.enums import CertificateRole
from shared.errors import CertfleetError, ConflictError, ExchangeError, ValidationError
from shared.logging import get_logger
from shared.models import Certificate, Device, Trustpoint

log = get_logger(__name__)

MEDIA_TYPES = {"pkcs12": "application/x-pkcs12", "pem": "application/x-pem-file"}
EXTENSIONS = {"pkcs12": "p12", "pem": "pem"}


class DeviceProblem(CertfleetError):
    """The device could not make the export: 502 with the device client's code."""

    status = 502

    def __init__(self, message: str, *, code: str, device_code: str | None = None) -> None:
        super().__init__(message, code=code)
        if device_code:
            self.extensions = {"device_code": device_code}


@dataclass(frozen=True)
class ExportedFile:
    filename: str
    media_type: str
    content: bytes = field(repr=False)


def export_certificate(
    session: Session, *, scope: DomainScope, device_id: uuid.UUID, name: str, fmt: str,
    passphrase: str | None, devices: DeviceClient, principal: Principal, audit: dict[str, Any],
) -> ExportedFile:
    """Make the export; ``audit`` gets what the audit log records of it besides its route (never the
    passphrase)."""
    audit["format"] = fmt
    trustpoint, device = get_trustpoint(session, scope=scope, device_id=device_id, name=name)
    audit.update(device_name=device.name, trustpoint_id=str(trustpoint.id))
    if fmt == "pkcs12" and not passphrase:
        raise ValidationError(
            "a PKCS12 export needs a passphrase: it encrypts the private key, and you need it to import "
            "the file later; send {\"format\": \"pkcs12\", \"passphrase\": \"…\"}",
            code="passphrase_required",
        )
    identity = _identity_certificate(session, trustpoint)
    if identity is None:
        raise ConflictError(
            f"trustpoint {name} of device {device.name} has no identity certificate to export (identity "
            f"status: {trustpoint.identity_status}); export it once its identity certificate is available",
            code="no_identity_certificate",
        )
    filename = f"{trustpoint.name}.{EXTENSIONS[fmt]}"
    if fmt == "pem":
        _log(trustpoint, device, fmt=fmt, principal=principal)
        return ExportedFile(filename, MEDIA_TYPES[fmt], identity.pem.encode())
    try:
        answer = devices.export_trustpoint(device, trustpoint.name, "pkcs12", passphrase)
        content = base64.b64decode(answer.content_base64, validate=True)
    except DeviceTransientError as exc:
        _log(trustpoint, device, fmt=fmt, principal=principal, error_code=exc.code)
        raise DeviceProblem(f"{exc.message}; try the export again", code=exc.code) from None
    except ExchangeError as exc:  # the device refused (4xx) or answered outside the contract
        _log(trustpoint, device, fmt=fmt, principal=principal, error_code=exc.code)
        audit["device_code"] = exc.code
        raise DeviceProblem(f"the device could not export trustpoint {name}: {exc.message}",
                            code="device_error", device_code=exc.code) from None
    except (binascii.Error, ValueError):
        _log(trustpoint, device, fmt=fmt, principal=principal, error_code="device_bad_response")
        audit["device_code"] = "device_bad_response"
        raise DeviceProblem(f"device {device.serial} sent an export that is not base64",
                            code="device_error", device_code="device_bad_response") from None
    _log(trustpoint, device, fmt=fmt, principal=principal)
    return ExportedFile(filename, MEDIA_TYPES[fmt], content)


def _identity_certificate(session: Session, trustpoint: Trustpoint) -> Certificate | None:
    return session.exec(
        select(Certificate).where(Certificate.trustpoint_id == trustpoint.id,
                                  Certificate.role == CertificateRole.IDENTITY.value,
                                  Certificate.chain_position == 0)
    ).first()


def _log(trustpoint: Trustpoint, device: Device, *, fmt: str, principal: Principal,
         error_code: str | None = None) -> None:
    log.info("certificate exported" if error_code is None else "certificate export failed",
             device=device.name, trustpoint=trustpoint.name, format=fmt, requested_by=principal.describe(),
             error_code=error_code)
