from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from services.controller.api.schemas.common import InputModel
from services.controller.api.schemas.jobs import JobPublic
from shared.states import Status


class TrustpointAdd(InputModel):
    """Add a trustpoint: install this enrollment object on the device."""

    enrollment_object_id: uuid.UUID


class CertificateSummary(BaseModel):
    """What a list shows of a certificate: the stored columns, no parsing."""

    role: str
    chain_position: int
    subject: str
    issuer: str
    serial_number: str
    not_before: datetime
    not_after: datetime
    key_algorithm: str
    key_size: int
    signature_algorithm: str
    fingerprint_sha256: str


class CertificatePublic(CertificateSummary):
    """The magnifying glass: every field of :func:`shared.pki.describe`, and the PEM."""

    fingerprint_sha1: str
    key_usage: list[str]
    extended_key_usage: list[str]
    subject_alt_names: list[str]
    crl_urls: list[str]
    ocsp_urls: list[str]
    is_ca: bool
    pem: str


class TrustpointSummary(BaseModel):
    id: uuid.UUID
    name: str
    device_id: uuid.UUID
    device_name: str
    domain_id: uuid.UUID
    enrollment_object_id: uuid.UUID
    enrollment_type: str
    ca_status: Status
    identity_status: Status
    error_code: str | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime | None
    #: When the identity certificate is due for renewal (certfleet renews EST, SCEP and
    #: self-signed ones then); empty while a renewal is under way.
    renewal_due_at: datetime | None = None
    last_renewal_at: datetime | None = None
    #: Renewals that failed in a row, and the last one's error.
    renewal_failures: int = 0
    renewal_error_code: str | None = None
    renewal_error_message: str | None = None
    #: Set when the certificate is due and certfleet cannot renew it (manual and PKCS12
    #: enrollment): the operator must.
    renewal_warning: str | None = None
    #: When the CA revoked the installed identity certificate, and why, as the revocation scan found.
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    identity_certificate: CertificateSummary | None = None
    #: Issuing CA first, then up the chain towards the root.
    ca_certificates: list[CertificateSummary] = []


class TrustpointPublic(TrustpointSummary):
    identity_certificate: CertificatePublic | None = None
    ca_certificates: list[CertificatePublic] = []
    #: The device's certificate request, while an operator must get it signed (manual enrollment).
    csr_pem: str | None = None
    #: The enrollment object's fields whose values come from a domain's override (the nearest one
    #: between the trustpoint's domain and the object's), and that domain; the trustpoint's jobs
    #: deploy them.
    overridden_fields: list[str] = []
    override_domain_id: uuid.UUID | None = None


class TrustpointAccepted(BaseModel):
    """Answer to an action: the trustpoint as it is now and the job that carries the action out."""

    trustpoint: TrustpointPublic
    job: JobPublic


#: A field holding certificates in PEM (JSON Schema's contentMediaType): content the schema cannot
#: check, the API parses it.
PEM = {"contentMediaType": "application/x-pem-file"}


class IdentityCertificateImport(InputModel):
    """The JSON form of an identity certificate import (a raw PEM or DER body works too)."""

    certificate_pem: str = Field(min_length=1, max_length=65536, json_schema_extra=PEM)
    #: The CA certificate(s) that issued it, when the trustpoint has no CA certificate yet.
    ca_certificate_pem: str | None = Field(default=None, max_length=65536, json_schema_extra=PEM)


class ExportRequest(InputModel):
    """Export Certificate: PKCS12 (complete chain, needs a passphrase) or PEM (identity
    certificate only)."""

    format: Literal["pkcs12", "pem"]
    #: Protects the PKCS#12 file; never stored or logged.
    passphrase: SecretStr | None = Field(default=None, max_length=1024)


class PeerValidationRequest(InputModel):
    """A peer's certificate for the device to validate with the trustpoint's CA, as it would a
    VPN peer's (JSON, at most 64 KiB)."""

    # Together within the route's 64 KiB body cap (uploads.MAX_PEER_VALIDATION_BODY), even JSON-escaped.
    certificate_pem: str = Field(min_length=1, max_length=8192, json_schema_extra=PEM)
    #: Intermediate CA certificates the peer sends with its certificate (PEM).
    chain_pem: str | None = Field(default=None, max_length=20480, json_schema_extra=PEM)
    #: What the peer is validated for; left out: any use the trustpoint allows.
    usage: Literal["ipsec_client", "ssl_client", "ssl_server"] | None = None


class PeerValidationResult(BaseModel):
    """The device's verdict: ``valid``, ``revoked`` (reason and time), ``unknown`` (no revocation
    source could answer) or ``invalid`` (chain, dates, CA flag or usage; ``reason`` says which);
    ``source`` is what answered about revocation ("crl", "ocsp", or null)."""

    verdict: Literal["valid", "revoked", "unknown", "invalid"]
    reason: str | None = None
    revoked_at: datetime | None = None
    source: Literal["crl", "ocsp"] | None = None
    detail: str = ""
