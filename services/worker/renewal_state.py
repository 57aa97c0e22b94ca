"""A trustpoint's renewal state, written in the same transaction as the job's outcome.

- A new identity certificate (from any job) gets its renewal time from the enrollment object's
  policy; a refresh that finds the same certificate leaves the time as it was, so a failed
  renewal's backoff is not undone by looking at the device.
- A renewal job that installed a new certificate is recorded as the last renewal; one that
  failed counts a failure, keeps its error on the trustpoint and is due again after a backoff,
  until the certificate ends.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlmodel import Session, select

from services.worker.persist import InstalledIdentity, LockedTrustpoint
from shared.enums import CertificateRole, JobReason
from shared.metrics import RENEWALS
from shared.models import Certificate, EnrollmentObject
from shared.renewal import RenewalPolicy, renewal_due_at, retry_at
from shared.settings import Settings

#: The renewal error a trustpoint shows while the CA holds its renewal request.
PENDING = "renewal_pending"


def policy_of(obj: EnrollmentObject | None) -> RenewalPolicy:
    if obj is None:
        return RenewalPolicy()
    return RenewalPolicy(auto_renew=obj.auto_renew, fraction=obj.renew_before_fraction, days=obj.renew_before_days)


def _identity(session: Session, trustpoint_id: uuid.UUID) -> Certificate | None:
    session.flush()  # the certificates this job just wrote
    return session.exec(
        select(Certificate).where(Certificate.trustpoint_id == trustpoint_id,
                                  Certificate.role == CertificateRole.IDENTITY.value)
    ).first()


def _due(trustpoint: LockedTrustpoint, identity: Certificate | InstalledIdentity, obj: EnrollmentObject | None,
         settings: Settings) -> datetime:
    return renewal_due_at(
        not_before=identity.not_before, not_after=identity.not_after, policy=policy_of(obj),
        key=f"{trustpoint.id}:{identity.serial_number}", spread=settings.renewal_spread,
    )


def after_success(
    session: Session, trustpoint: LockedTrustpoint, obj: EnrollmentObject | None, *, identity: InstalledIdentity | None,
    job_id: uuid.UUID, reason: JobReason, now: datetime, settings: Settings,
) -> None:
    """``identity``: the trustpoint's identity certificate as this job's write left it."""
    if identity is None:
        trustpoint.renewal_due_at = None
        return
    installed_now = identity.job_id == job_id
    if installed_now:
        trustpoint.renewal_due_at = _due(trustpoint, identity, obj, settings)
        if reason is JobReason.RENEWAL:
            trustpoint.last_renewal_at = now
            RENEWALS.labels(method=trustpoint.enrollment_type, outcome="succeeded").inc()
        trustpoint.renewal_failures = 0
        trustpoint.renewal_error_code = trustpoint.renewal_error_message = None
        trustpoint.revoked_at = trustpoint.revocation_reason = None  # a new certificate, not revoked
    elif reason is JobReason.RENEWAL:
        # Held by the CA for approval: not due again; a refresh installs the certificate once issued.
        trustpoint.renewal_error_code = PENDING
        trustpoint.renewal_error_message = "the CA holds the renewal request; refresh the trustpoint once approved"
    elif (trustpoint.renewal_due_at is None and trustpoint.renewal_failures == 0
          and trustpoint.renewal_error_code != PENDING):
        # A certificate certfleet has not planned yet (installed before renewal existed).
        trustpoint.renewal_due_at = _due(trustpoint, identity, obj, settings)


def after_failure(
    session: Session, trustpoint: LockedTrustpoint, *, reason: JobReason, code: str, message: str, now: datetime,
    settings: Settings,
) -> None:
    """A renewal job failed for good: try again later, while the certificate lasts."""
    if reason is not JobReason.RENEWAL:
        return
    identity = _identity(session, trustpoint.id)
    trustpoint.renewal_failures += 1
    trustpoint.renewal_error_code = code[:64]
    trustpoint.renewal_error_message = message[:2048]
    trustpoint.renewal_due_at = None if identity is None else retry_at(
        now=now, failures=trustpoint.renewal_failures, not_after=identity.not_after,
        first=timedelta(seconds=settings.renewal_retry_seconds),
        longest=timedelta(seconds=settings.renewal_retry_max_seconds),
    )
    RENEWALS.labels(method=trustpoint.enrollment_type, outcome="failed").inc()
