"""Rules an override of an enrollment object must satisfy. Pure: the object and the values sent
in, normalised values out, or :class:`shared.errors.ValidationError` with a stable code.

An override is checked by checking the object as the domain would get it (the object merged with
the override) exactly as an object is checked: an override is accepted only if the object with its
values would be.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as PydanticValidationError

from services.controller.api.schemas.enrollment_objects import EnrollmentObjectCreate
from services.controller.rules.enrollment_objects import object_columns
from shared.enrollment_overrides import OVERRIDABLE_FIELDS, complete, merge
from shared.errors import ValidationError
from shared.models import EnrollmentObjectFields

_FIELDS = tuple(EnrollmentObjectFields.model_fields)


def base_of(obj: Any) -> dict[str, Any]:
    """The operator-set fields of a stored object (or of column values in a mapping)."""
    if isinstance(obj, dict):
        return {name: obj[name] for name in _FIELDS}
    return {name: getattr(obj, name) for name in _FIELDS}


def sent_values(data: Any) -> dict[str, Any]:
    """The overridable fields the request sent (left out: not overridden)."""
    sent = data.model_fields_set & set(OVERRIDABLE_FIELDS)
    return {name: getattr(data, name) for name in OVERRIDABLE_FIELDS if name in sent}


def merged_columns(base: dict[str, Any], values: dict[str, Any], *, secrets: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The object's columns as a domain with override ``values`` gets them, checked as an object's
    (``secrets``: the password or challenge sent with the override, checked for the type)."""
    merged = merge(base, values)
    try:
        data = EnrollmentObjectCreate.model_validate({**merged, **(secrets or {})})
    except PydanticValidationError as exc:  # only a stored value the limits no longer allow
        raise ValidationError(f"the enrollment object with these values is not valid: {exc.errors()[0]['msg']}",
                              code="invalid_override") from None
    return object_columns(data)


def override_values(base: dict[str, Any], data: Any) -> dict[str, Any]:
    """The values to store for override request ``data`` on an object with fields ``base``:
    normalised as the object's own are (URLs trimmed, fingerprints without colons)."""
    values = complete(sent_values(data))
    secrets = {name: getattr(data, name) for name in ("password", "challenge_password")
               if getattr(data, name) is not None}
    if not values and not any(secret.get_secret_value() for secret in secrets.values()):
        raise ValidationError(
            f"an override needs at least one value ({', '.join(OVERRIDABLE_FIELDS)}) or a secret of its own; "
            "to stop overriding, DELETE the override", code="override_empty")
    columns = merged_columns(base, values, secrets=secrets)
    return {name: columns[name] for name in values}
