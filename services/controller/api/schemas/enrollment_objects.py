from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field, SecretStr

from services.controller.api.schemas.common import InputModel
from shared.enums import EnrollmentType, KeyType


class EnrollmentObjectFields(BaseModel):
    """What an operator sets on a certificate enrollment object, for every enrollment type
    (fields a type does not use stay at their defaults)."""

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=1024)
    enrollment_type: EnrollmentType
    # Key
    key_type: KeyType = KeyType.RSA
    key_size: int = 2048
    # Certificate parameters
    common_name: str = Field(default="", max_length=64)
    organization: str = Field(default="", max_length=64)
    organizational_unit: str = Field(default="", max_length=64)
    locality: str = Field(default="", max_length=128)
    state: str = Field(default="", max_length=128)
    country: str = Field(default="", max_length=2)
    email: str = Field(default="", max_length=128)
    include_fqdn: bool = False
    include_device_ip: bool = False
    include_serial_number: bool = False
    validity_days: int = 365
    # EST / SCEP
    enrollment_url: str = Field(default="", max_length=512)
    username: str = Field(default="", max_length=128)
    fingerprint: str = Field(default="", max_length=200)
    ignore_server_validation: bool = False
    retry_period_minutes: int = 1
    retry_count: int = 10
    #: The CA endpoint's limits across every worker: enrollments at once, and started per
    #: second. Null: the settings' CERTFLEET_CA_CONCURRENCY and CERTFLEET_CA_RATE_PER_SECOND.
    ca_concurrency_limit: int | None = Field(default=None, ge=1, le=10_000)
    ca_rate_limit: float | None = Field(default=None, gt=0, le=100_000)
    # Manual
    ca_certificate_pem: str = Field(default="", max_length=65536)
    ca_only: bool = False
    # Revocation checking
    ocsp_url: str = Field(default="", max_length=512)
    crl_urls: list[str] = Field(default_factory=list, max_length=16)


class EnrollmentObjectCreate(EnrollmentObjectFields, InputModel):
    # SecretStr: a secret stays hidden even if the request model is printed or logged.
    #: EST password. Write-only: stored encrypted, never shown again.
    password: SecretStr | None = Field(default=None, max_length=256)
    #: SCEP challenge password. Write-only: stored encrypted, never shown again.
    challenge_password: SecretStr | None = Field(default=None, max_length=256)


class EnrollmentObjectUpdate(EnrollmentObjectCreate):
    """A PUT replaces every field. A secret left out (or null) is kept while the enrollment
    type stays the same; an empty string removes it."""


class EnrollmentObjectPublic(EnrollmentObjectFields):
    id: uuid.UUID
    domain_id: uuid.UUID
    #: Whether an EST password or SCEP challenge is stored (the secret itself never leaves).
    has_secret: bool
    #: Whether a PKCS#12 file is stored.
    has_pkcs12_file: bool
    pkcs12_filename: str
    created_at: datetime
    updated_at: datetime


class Pkcs12Upload(InputModel):
    """The JSON form of a PKCS#12 upload (multipart/form-data with ``file`` and ``passphrase``
    works too). The enrollment object, and so the trustpoint, is named as the file."""

    #: The file's name, e.g. "vpn-gateway.p12": the object is named "vpn-gateway".
    filename: str = Field(min_length=1, max_length=255)
    pkcs12_base64: str = Field(min_length=1)
    passphrase: SecretStr = Field(max_length=1024)
    #: Another name than the file's, e.g. when the file's name cannot be a trustpoint name.
    name: str | None = Field(default=None, min_length=1, max_length=64)
    description: str = Field(default="", max_length=1024)


class PassphraseUpdate(InputModel):
    """Correct a PKCS#12 object's passphrase; the stored file is kept."""

    passphrase: SecretStr = Field(max_length=1024)
