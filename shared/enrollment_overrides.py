"""Child-domain overrides of enrollment objects: which fields a descendant domain may set for its
own trustpoints, which override applies to a trustpoint, and the values it is deployed with.

Pure: rows and mappings in, values out. The controller (checking and showing overrides) and the
worker (deploying them) use the same rules, so what the API shows is what the device gets.

- Only :data:`OVERRIDABLE_FIELDS` may be overridden: the CA and how the device reaches it, the
  certificate's subject, key and validity, revocation URLs, retries and the renewal window. Not
  the name or type (a trustpoint is named after its object and keeps its type), nor the settings
  only an admin may make (``ignore_server_validation``, the CA limits).
- The nearest override wins, as a whole: on the path from the trustpoint's domain up to the
  object's domain, the first domain with an override gives its values; overrides do not stack.
- An override that names another CA (``enrollment_url``) does not carry the admin's decisions
  about the object's CA to it: the server check is on, and the CA limits are the installation's.
- The object's EST password or SCEP challenge is used only while the override leaves the CA, its
  trust and the user alone (:data:`SECRET_BOUND_FIELDS`); otherwise only the override's own secret
  is, or none: it is never sent to a CA it was not given for.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from shared.models import EnrollmentObject, EnrollmentOverride

#: The fields a descendant domain may override, in the order answers list them.
OVERRIDABLE_FIELDS: tuple[str, ...] = (
    "enrollment_url", "username", "fingerprint",
    "common_name", "organization", "organizational_unit", "locality", "state", "country", "email",
    "validity_days", "key_type", "key_size",
    "ocsp_url", "crl_urls",
    "retry_period_minutes", "retry_count",
    "renew_before_fraction", "renew_before_days",
)
#: One setting in two fields (at most one is set): an override giving either replaces both.
RENEWAL_WINDOW = ("renew_before_fraction", "renew_before_days")
#: The settings that say to whom a stored EST password or SCEP challenge is sent: the CA's URL,
#: how its server is trusted, and the user it is the password of.
SECRET_BOUND_FIELDS = ("enrollment_url", "fingerprint", "ignore_server_validation", "username")
#: What an admin decided for the object's own CA, reset when an override names another CA.
CA_DECISIONS: Mapping[str, Any] = {"ignore_server_validation": False, "ca_concurrency_limit": None,
                                   "ca_rate_limit": None}

T = TypeVar("T")


def complete(values: Mapping[str, Any]) -> dict[str, Any]:
    """Override values as stored: only overridable fields (others raise ValueError), and the
    renewal window whole (the half not given is empty)."""
    unknown = sorted(set(values) - set(OVERRIDABLE_FIELDS))
    if unknown:
        raise ValueError(f"not overridable: {', '.join(unknown)}")
    done = dict(values)
    if any(field in done for field in RENEWAL_WINDOW):
        for field in RENEWAL_WINDOW:
            done.setdefault(field, None)
    return done


def overridden_fields(values: Mapping[str, Any]) -> list[str]:
    """The overridden fields' names, in :data:`OVERRIDABLE_FIELDS` order."""
    return [field for field in OVERRIDABLE_FIELDS if field in values]


def names_another_ca(base: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    return "enrollment_url" in values and values["enrollment_url"] != base.get("enrollment_url")


def merge(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The object's field values ``base`` with an override's ``values`` applied."""
    values = complete(values)
    merged = {**base, **values}
    if names_another_ca(base, values):
        merged.update(CA_DECISIONS)
    return merged


def uses_object_secret(base: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """Whether the object's secret may go where the override sends the enrollment: only if the
    merged values keep the CA, its trust and the user the secret was given for."""
    merged = merge(base, values)
    return all(merged.get(field) == base.get(field) for field in SECRET_BOUND_FIELDS)


def secret_target(base: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[Any, ...]:
    """Where an override's own secret goes: the merged values of :data:`SECRET_BOUND_FIELDS`."""
    merged = merge(base, values)
    return tuple(merged.get(field) for field in SECRET_BOUND_FIELDS)


def path_up(parent_of: Mapping[uuid.UUID, uuid.UUID | None], domain_id: uuid.UUID) -> list[uuid.UUID]:
    """``domain_id``, its parent, and so on up to the root (a cycle in bad data ends the walk)."""
    path: list[uuid.UUID] = []
    current: uuid.UUID | None = domain_id
    while current is not None and current not in path:
        path.append(current)
        current = parent_of.get(current)
    return path


def nearest(path: Sequence[uuid.UUID], object_domain: uuid.UUID, by_domain: Mapping[uuid.UUID, T]) -> T | None:
    """The override that applies in ``path[0]``: the first on ``path`` (upwards) strictly below the
    object's domain. None when there is none, or when the object's domain is not on the path (the
    object is not usable there)."""
    if object_domain not in path:
        return None
    for domain_id in path:
        if domain_id == object_domain:
            return None
        if domain_id in by_domain:
            return by_domain[domain_id]
    return None


def field_values(obj: EnrollmentObject) -> dict[str, Any]:
    """Every column of ``obj`` by name (secrets included: they stay in the process)."""
    return {name: getattr(obj, name) for name in EnrollmentObject.model_fields}


def effective_object(obj: EnrollmentObject, override: EnrollmentOverride | None) -> EnrollmentObject:
    """The enrollment object as trustpoints under ``override`` are deployed: a detached copy with
    the override's values and the secret that may go to the merged CA (the override's own, else
    the object's only if :func:`uses_object_secret`). Never added to a session."""
    if override is None:
        return obj
    base = field_values(obj)
    merged = merge(base, override.values)
    if override.secret_blob is not None:
        merged["secret_blob"] = override.secret_blob
    elif not uses_object_secret(base, override.values):
        merged["secret_blob"] = None
    return EnrollmentObject(**merged)
