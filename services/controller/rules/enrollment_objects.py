"""Rules an enrollment object must satisfy, per enrollment type. Pure: input model in,
normalised column values out, or :class:`shared.errors.ValidationError` with a stable code.

Key, name, subject and validity are checked by building the
:class:`shared.enrollment.EnrollmentParameters` the device will receive, so an object
that is accepted here is one a device can be configured with.
"""

from __future__ import annotations

from typing import Any

from services.controller.api.schemas.enrollment_objects import EnrollmentObjectCreate
from services.controller.rules.checks import check_fingerprint, check_http_url
from shared.enrollment import EnrollmentParameters, SubjectFields
from shared.enrollment_overrides import SECRET_BOUND_FIELDS as SECRET_BOUND
from shared.enums import EnrollmentType, Role
from shared.errors import ForbiddenError, ValidationError
from shared.pki import load_certificates
from shared.renewal import check_policy

_URL_TYPES = (EnrollmentType.EST, EnrollmentType.SCEP)
_SECRET_FOR = {"password": EnrollmentType.EST, "challenge_password": EnrollmentType.SCEP}


def _not_applicable(field: str, kind: EnrollmentType, applies_to: str) -> ValidationError:
    return ValidationError(
        f"{field} applies to {applies_to} enrollment only, not {kind.value}: leave it out",
        code="field_not_applicable",
    )


def object_columns(data: EnrollmentObjectCreate) -> dict[str, Any]:
    """The table columns for ``data`` (secrets excluded), validated and normalised."""
    kind = EnrollmentType(data.enrollment_type)
    subject = SubjectFields(
        common_name=data.common_name, organization=data.organization,
        organizational_unit=data.organizational_unit, locality=data.locality, state=data.state,
        country=data.country, email=data.email,
    )
    EnrollmentParameters(
        name=data.name, enrollment_type=kind, key_type=data.key_type, key_size=data.key_size,
        subject=subject, validity_days=data.validity_days,
    )
    columns = data.model_dump(exclude={"password", "challenge_password"})
    columns["enrollment_type"] = kind.value
    columns["key_type"] = data.key_type.value

    if kind in _URL_TYPES:
        if not data.enrollment_url.strip():
            raise ValidationError(
                f"{kind.value.upper()} enrollment needs enrollment_url, the CA's URL, "
                "e.g. https://ca.example.com/ or https://[2001:db8::5]:8443/",
                code="enrollment_url_required",
            )
        columns["enrollment_url"] = check_http_url(data.enrollment_url, field="enrollment_url")
        # EST exists only over TLS; SCEP runs over plain HTTP (its messages are signed and
        # enveloped themselves), and the devices speak it that way only.
        scheme = columns["enrollment_url"].split(":", 1)[0].lower()
        if kind is EnrollmentType.EST and scheme != "https":
            raise ValidationError("EST runs over HTTPS only: use an https:// enrollment_url",
                                  code="est_url_not_https")
        if kind is EnrollmentType.SCEP and scheme != "http":
            raise ValidationError("SCEP runs over plain HTTP: use an http:// enrollment_url, e.g. "
                                  "http://ca.example.com/cgi-bin/pkiclient.exe", code="scep_url_not_http")
    else:
        for field in ("enrollment_url", "username", "ca_concurrency_limit", "ca_rate_limit"):
            if getattr(data, field):
                raise _not_applicable(field, kind, "EST and SCEP")
    if not 1 <= data.retry_period_minutes <= 60:
        raise ValidationError("retry_period_minutes must be 1 to 60", code="invalid_retry_period")
    if not 0 <= data.retry_count <= 100:
        raise ValidationError("retry_count must be 0 to 100", code="invalid_retry_count")
    columns["fingerprint"] = check_fingerprint(data.fingerprint)

    for field, owner in _SECRET_FOR.items():
        if getattr(data, field) and kind is not owner:
            raise _not_applicable(field, kind, owner.value.upper())

    if data.ca_certificate_pem.strip():
        if kind is not EnrollmentType.MANUAL:
            raise _not_applicable("ca_certificate_pem", kind, "manual")
        load_certificates(data.ca_certificate_pem)
    elif data.ca_only:
        raise ValidationError("a CA-only manual enrollment needs ca_certificate_pem, the CA certificate",
                              code="ca_certificate_required")
    if data.ca_only and kind is not EnrollmentType.MANUAL:
        raise _not_applicable("ca_only", kind, "manual")

    check_policy(validity_days=data.validity_days, fraction=data.renew_before_fraction, days=data.renew_before_days)

    if data.ocsp_url:
        columns["ocsp_url"] = check_revocation_url(data.ocsp_url, field="ocsp_url")
    columns["crl_urls"] = [check_revocation_url(url, field="crl_urls") for url in data.crl_urls]
    check_validation(data, kind)
    columns["validation_usage"] = sorted(set(data.validation_usage))
    return columns


#: What a trustpoint's CA may validate peers for.
VALIDATION_USAGES = ("ipsec_client", "ssl_client", "ssl_server")
REVOCATION_ORDERS = ("crl_first", "ocsp_first")


def check_revocation_url(value: str, *, field: str) -> str:
    """CRL and OCSP are fetched over plain HTTP (their answers are signed): an http:// URL, IPv6
    literals in square brackets (http://[2001:db8::7]/crl)."""
    url = check_http_url(value, field=field)
    if not url.lower().startswith("http://"):
        raise ValidationError(f"{field} {value!r}: CRL and OCSP are served over plain http:// (their answers are "
                              "signed by the CA), e.g. http://[2001:db8::7]/crl", code="revocation_url_not_http")
    return url


def check_validation(data: EnrollmentObjectCreate, kind: EnrollmentType) -> None:
    """Revocation and validation settings that cannot work are refused."""
    if data.revocation_order not in REVOCATION_ORDERS:
        raise ValidationError(f"revocation_order must be one of {', '.join(REVOCATION_ORDERS)}, "
                              f"not {data.revocation_order!r}", code="invalid_revocation_order")
    unknown = sorted(set(data.validation_usage) - set(VALIDATION_USAGES))
    if unknown or not data.validation_usage:
        raise ValidationError(f"validation_usage is one or more of {', '.join(VALIDATION_USAGES)}"
                              + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                              code="invalid_validation_usage")
    if kind is EnrollmentType.SELF_SIGNED and (data.revocation_crl or data.revocation_ocsp):
        raise _not_applicable("revocation_crl/revocation_ocsp", kind, "enrollment types with a CA")
    if data.revocation_crl and not data.crl_use_distribution_point and not data.crl_urls:
        raise ValidationError("CRL checking is on but has no CRL to read: keep crl_use_distribution_point, or give "
                              "crl_urls (http:// URLs, IPv6 literals in brackets)", code="crl_source_required")


def secret_of(data: EnrollmentObjectCreate) -> str | None:
    """The write-only secret this object type carries, as sent (None: not sent)."""
    kind = EnrollmentType(data.enrollment_type)
    secret = {EnrollmentType.EST: data.password, EnrollmentType.SCEP: data.challenge_password}.get(kind)
    return secret.get_secret_value() if secret is not None else None


#: The settings that say to whom a stored EST password or SCEP challenge is sent (one list for
#: objects and their overrides).
SECRET_BOUND_FIELDS = SECRET_BOUND


def changes_where_secret_goes(stored: Any, columns: dict[str, Any]) -> bool:
    """Whether new column values would send a stored EST password or SCEP challenge elsewhere
    than it was given for (another CA, a CA trusted otherwise, another user). Such a change
    drops the secret unless a new one comes with it. A PKCS#12 passphrase opens a file kept
    here and goes to no CA: it stays."""
    if EnrollmentType(columns["enrollment_type"]) not in _URL_TYPES:
        return False
    return any(columns[field] != getattr(stored, field) for field in SECRET_BOUND_FIELDS)


#: Settings only an admin may change: turning off the check of the CA's server certificate, and
#: the limits that protect a CA endpoint shared by every object naming it.
ADMIN_ONLY_SETTINGS = {
    "ignore_server_validation": "it turns off the check of the CA's server certificate",
    "ca_concurrency_limit": "it overrides how many enrollments a CA endpoint takes at once, for every object naming it",
    "ca_rate_limit": "it overrides how many enrollments a CA endpoint starts per second, for every object naming it",
}


def check_admin_only_settings(data: EnrollmentObjectCreate, role: Role, stored: Any = None) -> None:
    """Refuse a non-admin turning on ``ignore_server_validation`` or setting, changing or clearing
    a CA limit. What ``stored`` (the object a PUT replaces) already holds may be kept, and the
    server check turned back on, so any writer may still edit an object an admin set up."""
    if role is Role.ADMIN:
        return
    for field, why in ADMIN_ONLY_SETTINGS.items():
        value, before = getattr(data, field), getattr(stored, field, None)
        if field == "ignore_server_validation":
            refused, keep = value and not before, "leave it false"
        else:
            refused, keep = value != before, "leave it out" if before is None else f"keep it at {before}"
        if refused:
            raise ForbiddenError(f"only admin may set {field} ({why}); role {role.value} may not: {keep}, "
                                 "or ask an admin")
