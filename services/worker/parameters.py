"""From an enrollment object to the trustpoint configuration a device receives.

Pure: rows in, :class:`~shared.enrollment.EnrollmentParameters` out. Construction
validates, so an enrollment object that was stored with a value the device cannot take
fails the job with a clear code instead of reaching the device half-built.
"""

from __future__ import annotations

import base64
from typing import Any

from shared.enrollment import EnrollmentParameters, SubjectFields
from shared.enums import EnrollmentType
from shared.errors import PermanentError
from shared.models import Device, EnrollmentObject, EnrollmentOverride
from shared.secrets import SecretBox

#: Where an enrollment type's secret goes in the configuration (the device uses it with the CA).
SECRET_OPTION = {EnrollmentType.EST: "password", EnrollmentType.SCEP: "challenge"}


def check_secret_present(obj: EnrollmentObject, *, renewal: bool, override: EnrollmentOverride | None = None) -> None:
    """Refuse, before anything is sent, an enrollment whose CA wants a secret the object lacks:
    an EST object with a username but no password, or a first SCEP enrollment (PKCSReq) without
    a challenge password. A renewal authenticates with the current certificate instead. The
    object loses its secret when its CA URL, trust settings or username change without a new
    one, so this is where the operator learns to give it again.

    ``obj`` is the object as the trustpoint's domain gets it; with an ``override``, the secret is the
    override's own, or the object's only while the override keeps its CA, trust and username: the
    operator is sent to the override."""
    kind = EnrollmentType(obj.enrollment_type)
    if obj.secret_blob is not None or renewal:
        return
    where = f"PUT /api/v1/domains/{obj.domain_id}/enrollment-objects/{obj.id}"
    dropped = ("(a stored secret is dropped when the enrollment URL, fingerprint, ignore_server_validation or "
               "username change without a new one)")
    if override is not None:
        where = f"PUT /api/v1/domains/{override.domain_id}/enrollment-objects/{obj.id}/override"
        dropped = (f"(the trustpoint's domain gets the override of domain {override.domain_id}: its own secret, or "
                   "the object's only while the override keeps the object's CA URL, fingerprint and username)")
    if kind is EnrollmentType.EST and obj.username:
        raise PermanentError(
            f"enrollment object {obj.name} has username {obj.username!r} but no password {dropped}; give the "
            f"password ({where} with \"password\"), then enroll again", code="enrollment_secret_missing")
    if kind is EnrollmentType.SCEP:
        raise PermanentError(
            f"enrollment object {obj.name} has no challenge password {dropped}; give the CA's challenge password "
            f"({where} with \"challenge_password\"), then enroll again", code="enrollment_secret_missing")


def trustpoint_configuration(
    obj: EnrollmentObject, device: Device, *, name: str, secrets: SecretBox | None = None
) -> EnrollmentParameters:
    """The configuration of trustpoint ``name`` (the enrollment object's name, or the PKCS#12
    file's) on ``device``.

    An EST password or SCEP challenge, or a PKCS#12 file and its passphrase, is decrypted
    into it with ``secrets``: the device needs it to talk to the CA or to open the file. The
    configuration goes to the device only; it is never logged or queued.
    """
    return EnrollmentParameters(
        name=name,
        enrollment_type=EnrollmentType(obj.enrollment_type),
        key_type=obj.key_type,
        key_size=obj.key_size,
        subject=SubjectFields(
            common_name=obj.common_name,
            organization=obj.organization,
            organizational_unit=obj.organizational_unit,
            locality=obj.locality,
            state=obj.state,
            country=obj.country,
            email=obj.email,
        ),
        include_fqdn=obj.include_fqdn,
        include_device_ip=obj.include_device_ip,
        include_serial_number=obj.include_serial_number,
        validity_days=obj.validity_days,
        options=_options(obj, device, secrets),
    )


def _options(obj: EnrollmentObject, device: Device, secrets: SecretBox | None) -> dict[str, Any]:
    # The device decides about weak algorithms itself, as the real one does; it needs to know
    # whether the operator enabled weak-crypto on it.
    options: dict[str, Any] = {"weak_crypto": device.weak_crypto}
    kind = EnrollmentType(obj.enrollment_type)
    if kind in (EnrollmentType.EST, EnrollmentType.SCEP):
        options.update(
            enrollment_url=obj.enrollment_url,
            username=obj.username,
            fingerprint=obj.fingerprint,
            ignore_server_validation=obj.ignore_server_validation,
            retry_period_minutes=obj.retry_period_minutes,
            retry_count=obj.retry_count,
        )
    if kind is EnrollmentType.MANUAL:
        options.update(ca_certificate_pem=obj.ca_certificate_pem, ca_only=obj.ca_only)
    secret_option = SECRET_OPTION.get(kind)
    if secret_option and obj.secret_blob is not None and secrets is not None:
        options[secret_option] = secrets.open(obj.secret_blob).decode()
    if kind is EnrollmentType.PKCS12 and obj.pkcs12_blob is not None and secrets is not None:
        options["pkcs12_base64"] = base64.b64encode(secrets.open(obj.pkcs12_blob)).decode()
        if obj.secret_blob is not None:
            options["passphrase"] = secrets.open(obj.secret_blob).decode()
    if obj.ocsp_url:
        options["ocsp_url"] = obj.ocsp_url
    if obj.crl_urls:
        options["crl_urls"] = list(obj.crl_urls)
    # How the device validates peers with this trustpoint's CA (a self-signed one has no CA).
    if kind is not EnrollmentType.SELF_SIGNED:
        options["validation"] = validation_settings(obj)
    # Drop empty values: the configuration says only what the object sets.
    return {k: v for k, v in options.items() if v not in ("", None)}


def validation_settings(obj: EnrollmentObject) -> dict[str, Any]:
    """The enrollment object's revocation and validation settings, as the device takes them."""
    return {
        "revocation_crl": obj.revocation_crl, "crl_use_distribution_point": obj.crl_use_distribution_point,
        "crl_urls": list(obj.crl_urls), "revocation_ocsp": obj.revocation_ocsp, "ocsp_url": obj.ocsp_url,
        "revocation_order": obj.revocation_order, "valid_if_unreachable": obj.valid_if_unreachable,
        "validation_usage": list(obj.validation_usage), "skip_ca_flag_check": obj.skip_ca_flag_check,
        "ignore_ipsec_key_usage": obj.ignore_ipsec_key_usage,
    }
