"""Checking an identity certificate an operator imports into a manual trustpoint.

The device made a key pair and a certificate request (CSR); the operator had it signed by
their CA and imports the certificate, possibly with the CA certificate. The controller
checks it before anything is stored, and the device checks it again before installing it.
Pure: certificates and the clock in, an accepted import or a
:class:`~shared.errors.ValidationError` with a stable code out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.chains import issuing_chain, signed_by
from shared.errors import ValidationError
from shared.pki import load_certificates
from shared.weak_crypto import enforce, weak_certificate


@dataclass(frozen=True, kw_only=True)
class AcceptedImport:
    certificate: x509.Certificate
    #: CA certificates to install with it (issuing CA first); empty when the trustpoint has its own.
    ca_chain: tuple[x509.Certificate, ...] = ()


def parse_upload(certificate: bytes | str, ca_certificate: bytes | str | None = None
                 ) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The identity certificate and any CA certificates from what the operator sent: PEM or DER.
    A PEM with several certificates is the identity certificate followed by its CA chain."""
    certificates = load_certificates(certificate)
    if not certificates:
        raise ValidationError("no certificate found: send the identity certificate in PEM or DER",
                              code="invalid_certificate")
    identity, chain = certificates[0], list(certificates[1:])
    if ca_certificate:
        chain += load_certificates(ca_certificate)
    return identity, chain


def public_key_der(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_identity_import(
    certificate: x509.Certificate,
    *,
    request_public_key: object,
    installed_ca: Sequence[x509.Certificate],
    supplied_ca: Sequence[x509.Certificate] = (),
    weak_crypto: bool,
    now: datetime,
    skip_ca_flag_check: bool = False,
) -> AcceptedImport:
    """Accept ``certificate`` for a trustpoint waiting with a CSR for ``request_public_key``.

    Checks, in the order an operator would fix them: the certificate is for the device's key
    (``key_mismatch``); no weak algorithm unless weak-crypto is enabled (``weak_crypto``); it is
    valid now (``certificate_not_yet_valid``, ``certificate_expired``); it was issued by the
    trustpoint's CA certificate, or by the one sent with it when the trustpoint has none
    (``not_issued_by_ca``, ``ca_certificate_required``, ``ca_certificate_mismatch``), and a CA
    certificate sent with it has the CA flag in its basic constraints (``not_a_ca_certificate``)
    unless the enrollment object skips that check (``skip_ca_flag_check``).
    """
    if public_key_der(certificate.public_key()) != public_key_der(request_public_key):
        raise ValidationError(
            "the certificate is not for this trustpoint's key pair: its public key differs from the one "
            "in the trustpoint's certificate request; have the trustpoint's CSR signed and import that "
            "certificate",
            code="key_mismatch",
        )
    chain = _ca_chain(certificate, installed_ca, supplied_ca, skip_ca_flag_check=skip_ca_flag_check)
    for cert in (certificate, *chain):
        enforce(weak_certificate(cert), weak_crypto_enabled=weak_crypto)
    for cert in (certificate, *chain):
        _check_validity(cert, now=now)
    if not signed_by(certificate, chain[0]):
        raise ValidationError(
            f"the certificate (issuer {certificate.issuer.rfc4514_string()}) was not issued by the "
            f"trustpoint's CA certificate ({chain[0].subject.rfc4514_string()}); import a certificate that "
            "CA issued for the trustpoint's CSR",
            code="not_issued_by_ca",
        )
    return AcceptedImport(certificate=certificate, ca_chain=() if installed_ca else tuple(chain))


def _ca_chain(certificate: x509.Certificate, installed: Sequence[x509.Certificate],
              supplied: Sequence[x509.Certificate], *, skip_ca_flag_check: bool) -> list[x509.Certificate]:
    if installed:
        if set(supplied) - set(installed):
            raise ValidationError(
                "the trustpoint already has its CA certificate and the one sent with the import differs; "
                "leave the CA certificate out, or re-enroll with an enrollment object naming the new CA",
                code="ca_certificate_mismatch",
            )
        return list(installed)
    if not supplied:
        raise ValidationError(
            "this trustpoint has no CA certificate yet: send the CA certificate that issued the identity "
            "certificate with it (ca_certificate_pem, or after the identity certificate in the same PEM)",
            code="ca_certificate_required",
        )
    for ca in supplied:
        if not skip_ca_flag_check and not has_ca_flag(ca):
            raise ValidationError(
                f"{ca.subject.rfc4514_string()} is not a CA certificate (no CA flag in its basic constraints); "
                "send the certificate of the CA that issued the identity certificate, or, for a CA certificate "
                "made without the flag, set the enrollment object's skip_ca_flag_check",
                code="not_a_ca_certificate",
            )
    return issuing_chain(certificate, list(supplied))


def has_ca_flag(cert: x509.Certificate) -> bool:
    """Whether the certificate says it is a CA: basic constraints CA, or an old-style self-signed
    root without the extension."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return cert.subject == cert.issuer


def _check_validity(cert: x509.Certificate, *, now: datetime) -> None:
    what = "the certificate" if not _is_ca(cert) else f"CA certificate {cert.subject.rfc4514_string()}"
    if now < cert.not_valid_before_utc:
        raise ValidationError(
            f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; import it then, or "
            "check the clocks of the CA and the device",
            code="certificate_not_yet_valid",
        )
    if now > cert.not_valid_after_utc:
        raise ValidationError(
            f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; have a new one issued",
            code="certificate_expired",
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
