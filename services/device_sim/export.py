"""Exporting a trustpoint from the device: the identity certificate as PEM, or key, identity
certificate and CA chain as a passphrase-encrypted PKCS#12 (AES-256-CBC, PBKDF2,
HMAC-SHA-256). The PKCS#12 file is the only way a private key leaves a device."""

from __future__ import annotations

import base64

from services.device_sim.fleet import Device, Trustpoint
from shared.device_api import ExportedFile, ExportRequest
from shared.enums import CertificateRole
from shared.errors import ConflictError, ValidationError
from shared.pkcs12 import export_pkcs12
from shared.pki import load_certificates


def export(device: Device, trustpoint: Trustpoint, request: ExportRequest) -> ExportedFile:
    """May take tens of milliseconds (PBKDF2): run it off the event loop."""
    identity = next((c for c in trustpoint.certificates
                     if c.role == CertificateRole.IDENTITY.value and c.chain_position == 0), None)
    if identity is None:
        raise ConflictError(
            f"trustpoint {trustpoint.name} on device {device.serial} has no identity certificate to export",
            code="no_identity_certificate",
        )
    if request.format == "pem":
        return ExportedFile(format="pem", content_base64=base64.b64encode(identity.pem.encode()).decode())
    if not request.passphrase:
        raise ValidationError("a PKCS#12 export needs a passphrase", code="passphrase_required")
    if trustpoint.private_key is None:
        raise ConflictError(
            f"trustpoint {trustpoint.name} on device {device.serial} has no private key for its certificate",
            code="no_private_key",
        )
    certificate = load_certificates(identity.pem)[0]
    cas = sorted((c for c in trustpoint.certificates if c.role == CertificateRole.CA.value),
                 key=lambda c: c.chain_position)
    # A self-signed trustpoint's CA certificate is its identity certificate: once in the file is enough.
    chain = [cert for cert in (load_certificates(c.pem)[0] for c in cas) if cert != certificate]
    content = export_pkcs12(name=trustpoint.name, private_key=trustpoint.private_key, certificate=certificate,
                            ca_chain=chain, passphrase=request.passphrase)
    return ExportedFile(format="pkcs12", content_base64=base64.b64encode(content).decode())
