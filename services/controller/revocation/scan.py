"""The revocation scan: ask the CAs whether the installed identity certificates are revoked, and
mark the trustpoints whose certificate is.

A scheduled run (``revocation-scan``) reads the installed identity certificates a page at a
time, each with its issuing CA certificate from the same trustpoint, and asks by CRL or OCSP as
the trustpoint's enrollment object says (an object that checks neither is asked through the
certificate's own CRL distribution point, then its OCSP address). One RevocationChecker serves
the whole scan, so a CA's CRL is fetched once per scan, not once per device.

A revoked certificate moves the trustpoint's identity status to ``revoked`` (code
``identity_revoked``, with the reason and time); re-enrolling it (``certfleet re-enroll --status
revoked``) installs a new one. An answer of unknown changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from sqlalchemy import and_
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from shared.enums import CertificateRole, EnrollmentType
from shared.metrics import REVOCATION_CHECKS
from shared.models import Certificate, EnrollmentObject, Trustpoint
from shared.override_lookup import OverrideIndex
from shared.revocation_fetch import RevocationChecker
from shared.states import Status, transition

PAGE = 500

#: How an object that checks neither CRL nor OCSP is scanned: the certificate's own addresses.
FROM_THE_CERTIFICATE = {
    "revocation_crl": True, "crl_use_distribution_point": True, "crl_urls": [], "revocation_ocsp": True,
    "ocsp_url": "", "revocation_order": "crl_first", "valid_if_unreachable": False,
}


@dataclass
class ScanResult:
    checked: int = 0
    revoked: int = 0
    unknown: int = 0
    newly_revoked: list[uuid.UUID] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{self.checked} certificates checked: {len(self.newly_revoked)} newly revoked, "
                f"{self.revoked} revoked in all, {self.unknown} unknown")


def scan_settings(obj: EnrollmentObject) -> dict:
    if not (obj.revocation_crl or obj.revocation_ocsp):
        return dict(FROM_THE_CERTIFICATE)
    return {
        "revocation_crl": obj.revocation_crl, "crl_use_distribution_point": obj.crl_use_distribution_point,
        "crl_urls": list(obj.crl_urls), "revocation_ocsp": obj.revocation_ocsp, "ocsp_url": obj.ocsp_url,
        "revocation_order": obj.revocation_order, "valid_if_unreachable": False,
    }


def start_at_zero() -> None:
    """Export every source and answer at 0 before the first scan: ``rate()`` and ``increase()``
    then see the first scan's checks, not only the later ones."""
    for source in ("crl", "ocsp", "none"):
        for outcome in ("good", "revoked", "unknown"):
            REVOCATION_CHECKS.labels(source=source, outcome=outcome)


def run_revocation_scan(
    session: Session, *, now: datetime, checker: RevocationChecker | None = None,
    fence: Callable[[Session], None] = lambda session: None, page: int = PAGE,
) -> ScanResult:
    if checker is None:  # one checker, one cache, for the whole scan
        with RevocationChecker(clock=lambda: now) as own:
            return run_revocation_scan(session, now=now, checker=own, fence=fence, page=page)
    issuer_cert = aliased(Certificate)
    result = ScanResult()
    # A trustpoint's revocation sources are its domain's: an override may name other OCSP or CRL URLs.
    overrides = OverrideIndex.load(session)
    after: uuid.UUID | None = None
    while True:
        query = (
            select(Trustpoint, Certificate.pem, issuer_cert.pem, EnrollmentObject)
            .join(Certificate, and_(Certificate.trustpoint_id == Trustpoint.id,
                                    Certificate.role == CertificateRole.IDENTITY.value))
            .join(issuer_cert, and_(issuer_cert.trustpoint_id == Trustpoint.id,
                                    issuer_cert.role == CertificateRole.CA.value, issuer_cert.chain_position == 0))
            .join(EnrollmentObject, EnrollmentObject.id == Trustpoint.enrollment_object_id)
            .where(Trustpoint.identity_status.in_([Status.AVAILABLE.value, Status.REVOKED.value]),
                   # A self-signed certificate has no CA that could revoke it: nothing to ask.
                   Trustpoint.enrollment_type != EnrollmentType.SELF_SIGNED.value)
            .order_by(Trustpoint.id).limit(page)
        )
        if after is not None:
            query = query.where(Trustpoint.id > after)
        rows = session.exec(query).all()
        if not rows:
            return result
        for trustpoint, cert_pem, issuer_pem, obj in rows:
            settings = scan_settings(overrides.applied_in(obj, trustpoint.domain_id).obj)
            _check(session, trustpoint, cert_pem, issuer_pem, settings, checker=checker, now=now, result=result)
        after = rows[-1][0].id
        fence(session)
        session.commit()


def _check(session: Session, trustpoint: Trustpoint, cert_pem: str, issuer_pem: str, settings: dict, *,
           checker: RevocationChecker, now: datetime, result: ScanResult) -> None:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    issuer = x509.load_pem_x509_certificate(issuer_pem.encode())
    answer = checker.check(cert, issuer, settings)
    result.checked += 1
    REVOCATION_CHECKS.labels(source=answer.source or "none", outcome=answer.status).inc()
    if answer.status == "unknown":
        result.unknown += 1
        return
    if answer.status != "revoked":
        if trustpoint.identity_status == Status.REVOKED.value:  # a hold lifted: in use again
            transition(trustpoint, now=now, identity=Status.AVAILABLE)
            trustpoint.revoked_at = trustpoint.revocation_reason = None
            session.add(trustpoint)
        return
    result.revoked += 1
    if trustpoint.identity_status == Status.REVOKED.value:
        return
    reason = answer.reason or "unspecified"
    revoked_at = answer.revoked_at or now
    transition(trustpoint, now=now, identity=Status.REVOKED, error_code="identity_revoked",
               error_message=f"the CA revoked the identity certificate (serial {cert.serial_number:X}) on "
                             f"{revoked_at:%Y-%m-%d %H:%M} UTC, reason {reason} (found by {answer.source}); "
                             "re-enroll the trustpoint")
    trustpoint.revoked_at, trustpoint.revocation_reason = revoked_at, reason[:32]
    trustpoint.updated_at = now
    session.add(trustpoint)
    result.newly_revoked.append(trustpoint.id)
