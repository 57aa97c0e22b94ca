"""The renewal pass: publish a re-enroll job for every trustpoint whose certificate is due.

Due trustpoints are read through the index on (enrollment type, renewal time), a page at a
time, so a pass costs what is due, not what the fleet holds. Each page is one transaction:
the fence on the scheduler's lease, a conditional UPDATE that clears the renewal time of the
page's trustpoints (the claim: a trustpoint is renewed once, whoever else runs a pass), and the
jobs, written together (a COPY on PostgreSQL). The jobs are published on the bulk queue after the commit;
what the broker refuses, the reconciler publishes when their lease ends.

Trustpoints busy with an unfinished job are left due: the next pass takes them. Trustpoints
of enrollment objects with automatic renewal off are left alone (they get a renewal-due
warning on their view). A trustpoint whose enrollment object its device's domain may no longer use
(the device was moved) is not renewed: the object's values and secrets would go to a device of
another domain. It counts a renewal failure instead (``enrollment_object_not_usable``, with what to
do, on the trustpoint and in its renewal-failed alert), due again after the usual backoff.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import dramatiq
from sqlalchemy import and_, exists, func, update
from sqlmodel import Session, select

from services.controller.queueing.publishing import publish_jobs
from shared import object_reach
from shared.db import insert_rows
from shared.enums import CertificateRole, JobKind, JobReason, JobState
from shared.events import BULK_QUEUE
from shared.models import Certificate, Device, EnrollmentObject, Job, Trustpoint
from shared.renewal import RENEWABLE, retry_at
from shared.settings import Settings

#: Trustpoints claimed per transaction.
PAGE = 1000

_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


@dataclass
class PassResult:
    published: int = 0
    #: Due trustpoints left for the next pass because a job of theirs is still unfinished.
    busy: int = 0
    #: Due trustpoints not renewed because their device's domain may not use their enrollment object.
    not_usable: int = 0

    def describe(self) -> str:
        text = f"{self.published} renewal{'s' if self.published != 1 else ''} published"
        if self.busy:
            text += f", {self.busy} busy trustpoint{'s' if self.busy != 1 else ''} left for the next pass"
        if self.not_usable:
            text += (f", {self.not_usable} not renewed: their enrollment object is not usable in their device's "
                     "domain")
        return text


@dataclass
class Claimed:
    """One page's work: the renewal jobs added, and the due trustpoints set aside as not usable."""

    job_ids: list[uuid.UUID]
    not_usable: int = 0


def _due(now: datetime):
    return and_(Trustpoint.enrollment_type.in_([m.value for m in RENEWABLE]), Trustpoint.renewal_due_at <= now)


def _busy():
    return exists().where(Job.trustpoint_id == Trustpoint.id, Job.state.in_(_UNFINISHED))


def claim_page(session: Session, *, now: datetime, settings: Settings, limit: int = PAGE) -> Claimed:
    """Claim up to ``limit`` due trustpoints that are not busy, and add their renewal jobs (not
    committed); those whose object their domain may not use count a failure instead."""
    candidates = session.exec(
        select(Trustpoint.id, Trustpoint.domain_id, EnrollmentObject.domain_id)
        .join(EnrollmentObject, EnrollmentObject.id == Trustpoint.enrollment_object_id)
        .where(_due(now), EnrollmentObject.auto_renew, ~_busy())
        # The index's own order: PostgreSQL reads it method by method and stops at the page's
        # end, whatever its statistics say. Ordered by the renewal time alone, the rows of three
        # methods must all be read and sorted first, and where the statistics (from before a day
        # of renewals) promise many due rows, it scans the whole table instead.
        .order_by(Trustpoint.enrollment_type, Trustpoint.renewal_due_at).limit(limit)
    ).all()
    free, unusable = [], []
    for tp_id, domain_id, object_domain_id in candidates:
        usable = object_reach.usable(session, object_domain_id=object_domain_id, domain_id=domain_id)
        (free if usable else unusable).append(tp_id)
    not_usable = set_aside(session, unusable, now=now, settings=settings) if unusable else 0
    if not free:
        return Claimed([], not_usable)
    claimed = session.execute(
        update(Trustpoint).where(Trustpoint.id.in_(free), _due(now))
        .values(renewal_due_at=None)
        .returning(Trustpoint.id, Trustpoint.device_id, Trustpoint.domain_id, Trustpoint.name,
                   Trustpoint.renewal_failures)
        .execution_options(synchronize_session=False)
    ).all()
    lease_until = now + timedelta(seconds=settings.job_lease_seconds)
    jobs = []
    for tp_id, device_id, domain_id, name, failures in claimed:
        detail = "renewal due" + (f" (try {failures + 1})" if failures else "")
        jobs.append(dict(
            id=uuid.uuid4(), kind=JobKind.RE_ENROLL.value, trustpoint_id=tp_id, device_id=device_id,
            domain_id=domain_id, trustpoint_name=name, state=JobState.QUEUED.value, attempts=0,
            max_attempts=settings.job_max_attempts, lease_expires_at=lease_until,
            steps=[{"at": now.isoformat(), "step": "requested", "detail": f"{detail}, by the scheduler"}],
            reason=JobReason.RENEWAL.value, created_at=now,
        ))
    if jobs:
        insert_rows(session, Job.__table__, jobs)
    return Claimed([job["id"] for job in jobs], not_usable)


def set_aside(session: Session, trustpoint_ids: list[uuid.UUID], *, now: datetime, settings: Settings) -> int:
    """Record a failed renewal on due trustpoints whose enrollment object their domain may not use,
    without a job (nothing is sent to the device): the error says what to do, and they are due again
    after the backoff, so one moved back renews then. Returns how many were still due."""
    rows = session.exec(
        select(Trustpoint, Device.name, EnrollmentObject.name, EnrollmentObject.domain_id)
        .join(Device, Device.id == Trustpoint.device_id)
        .join(EnrollmentObject, EnrollmentObject.id == Trustpoint.enrollment_object_id)
        .where(Trustpoint.id.in_(trustpoint_ids))
    ).all()
    set_aside_now = 0
    for trustpoint, device_name, object_name, object_domain_id in rows:
        why = object_reach.refusal(session, trustpoint=trustpoint.name, device=device_name, object_name=object_name,
                                   object_domain_id=object_domain_id, domain_id=trustpoint.domain_id)
        not_after = session.exec(select(func.min(Certificate.not_after)).where(
            Certificate.trustpoint_id == trustpoint.id, Certificate.role == CertificateRole.IDENTITY.value)).one()
        failures = trustpoint.renewal_failures + 1
        again = None if not_after is None else retry_at(
            now=now, failures=failures, not_after=not_after, first=timedelta(seconds=settings.renewal_retry_seconds),
            longest=timedelta(seconds=settings.renewal_retry_max_seconds))
        # Conditional on still being due: a pass elsewhere, or a renewal meanwhile, wins.
        set_aside_now += session.execute(
            update(Trustpoint).where(Trustpoint.id == trustpoint.id, _due(now)).values(
                renewal_failures=failures, renewal_error_code=object_reach.CODE,
                renewal_error_message=(why or "")[:2048], renewal_due_at=again)
            .execution_options(synchronize_session=False)
        ).rowcount
    return set_aside_now


def count_busy(session: Session, *, now: datetime) -> int:
    """Due trustpoints waiting for a job of theirs to finish."""
    return session.exec(
        select(func.count()).select_from(Trustpoint)
        .join(EnrollmentObject, EnrollmentObject.id == Trustpoint.enrollment_object_id)
        .where(_due(now), EnrollmentObject.auto_renew, _busy())
    ).one()


def run_renewal_pass(
    session: Session, broker: dramatiq.Broker, *, now: datetime, settings: Settings,
    fence: Callable[[Session], None] = lambda session: None, page: int = PAGE,
) -> PassResult:
    """Publish every due renewal, a page per transaction. ``fence`` runs in each page's
    transaction before it commits and raises to drop the page (the leader lost its lease)."""
    result = PassResult()
    while True:
        claimed = claim_page(session, now=now, settings=settings, limit=page)
        if not claimed.job_ids and not claimed.not_usable:
            result.busy = count_busy(session, now=now)
            session.rollback()
            return result
        fence(session)
        session.commit()
        result.not_usable += claimed.not_usable
        result.published += publish_jobs(
            broker, [(JobKind.RE_ENROLL, job_id, BULK_QUEUE) for job_id in claimed.job_ids], published_at=now)
