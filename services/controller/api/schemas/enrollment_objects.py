"""The enrollment-object API's request and answer bodies. The fields an operator sets, with
their limits, are :class:`shared.models.EnrollmentObjectFields`, which the table shares."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model
from sqlmodel.main import FieldInfoMetadata

from services.controller.api.schemas.common import InputModel
from shared.enrollment_overrides import OVERRIDABLE_FIELDS
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
    #: Read from a descendant domain: the fields whose values come from an override, and the
    #: domain of that override (the nearest one between the domain read from and the object's).
    overridden_fields: list[str] = []
    override_domain_id: uuid.UUID | None = None


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


def _overridable(name: str) -> tuple[Any, Any]:
    """An override's field: the object's type and limits (its table's column definition), and
    no default (left out: the object's value holds)."""
    info = EnrollmentObjectFields.model_fields[name]
    limits = [m for m in info.metadata if not isinstance(m, FieldInfoMetadata)]
    annotation = Annotated[(info.annotation, *limits)] if limits else info.annotation
    return annotation, Field(default=None, json_schema_extra=_no_default)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class _OverrideSecrets(InputModel):
    #: The override's own EST password. Write-only. Left out: the stored one is kept unless the
    #: override's CA, trust or username change; an empty string removes it.
    password: SecretStr | None = Field(default=None, max_length=256)
    #: The override's own SCEP challenge password, like ``password``.
    challenge_password: SecretStr | None = Field(default=None, max_length=256)


#: PUT …/enrollment-objects/{id}/override: the fields sent are overridden in the path's domain,
#: the others keep the object's value. Each takes what the object's field takes.
EnrollmentOverrideSet = create_model(
    "EnrollmentOverrideSet", __base__=_OverrideSecrets,
    __doc__="An override replaces the domain's previous one: the fields sent are overridden, the rest are "
            "the enrollment object's. Only these fields may be overridden; null is a value only for the "
            "renewal window (renew_before_fraction and renew_before_days, replaced together).",
    **{name: _overridable(name) for name in OVERRIDABLE_FIELDS},
)


class EnrollmentOverridePublic(BaseModel):
    """A domain's override of an enrollment object (``values`` empty: none; the object's values hold)."""

    enrollment_object_id: uuid.UUID
    domain_id: uuid.UUID
    #: The overridden fields and their values.
    values: dict[str, Any]
    #: Whether the override has its own EST password or SCEP challenge (never shown).
    has_secret: bool
    #: Whether the object's own secret is used for this domain's enrollments: only while the override
    #: keeps the object's CA, its trust and username, and has no secret of its own.
    uses_object_secret: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None
