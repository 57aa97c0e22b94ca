"""The enrollment-object API's request and answer bodies. The fields an operator sets, with
their limits, are :class:`shared.models.EnrollmentObjectFields`, which the table shares."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ConfigDict, Field, SecretStr

from services.controller.api.schemas.common import InputModel
from shared.models import EnrollmentObjectFields


class EnrollmentObjectCreate(EnrollmentObjectFields, InputModel):
    model_config = ConfigDict(json_schema_extra={
        # Rules between fields that JSON Schema cannot state, checked by the API (422 with their codes).
        "x-checked-beyond-schema": [
            "the fields an enrollment type uses: enrollment_url (https for EST, http for SCEP) and username for EST "
            "and SCEP, password for EST, challenge_password for SCEP, ca_certificate_pem and ca_only for manual",
            "the key size the key type takes; the subject the name and validity make",
            "renew_before_days or renew_before_fraction within validity_days",
            "ca_certificate_pem holds CA certificates; revocation needs a CRL source",
        ],
    })

    # SecretStr: a secret stays hidden even if the request model is printed or logged.
    #: EST password. Write-only: stored encrypted, never shown again.
    password: SecretStr | None = Field(default=None, max_length=256)
    #: SCEP challenge password. Write-only: stored encrypted, never shown again.
    challenge_password: SecretStr | None = Field(default=None, max_length=256)


class EnrollmentObjectUpdate(EnrollmentObjectCreate):
    """A PUT replaces every field. A secret left out (or null) is kept while the enrollment
    type stays the same, and the CA's URL, its trust (fingerprint, ignore_server_validation)
    and the username stay as well: changing any of them drops it, so an old secret never
    goes to another CA. An empty string removes it."""


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
    pkcs12_base64: str = Field(min_length=1, json_schema_extra={"contentEncoding": "base64",
                                                                "contentMediaType": "application/x-pkcs12"})
    passphrase: SecretStr = Field(max_length=1024)
    #: Another name than the file's, e.g. when the file's name cannot be a trustpoint name.
    name: str | None = Field(default=None, min_length=1, max_length=64)
    description: str = Field(default="", max_length=1024)


class PassphraseUpdate(InputModel):
    """Correct a PKCS#12 object's passphrase; the stored file is kept."""

    passphrase: SecretStr = Field(max_length=1024)
