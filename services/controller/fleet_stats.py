"""Fleet-wide figures for the /metrics gauges, computed by aggregate SQL at scrape time.

A few aggregate queries whatever the fleet's size: trustpoints counted by status pair and, of
those due for renewal, by method (GROUP BY); identity certificates counted per expiry window in
one pass (SUM of CASE); the schedules' last runs; open alerts by code and severity (GROUP BY);
the unfinished jobs by kind, state and reason (through the index on the job's state, so only the
unfinished ones are read), with the trustpoint's method for renewals; the trustpoints whose renewal
failed (a partial index holds just those). The result is a fixed, small set of series.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, func
from sqlmodel import Session, select

from services.controller.alerts.queries import count_open
from shared.enums import CertificateRole, JobReason, JobState
from shared.metrics import EXPIRY_WINDOWS_DAYS, FleetSnapshot
from shared.models import CaBundleState, Certificate, Device, Job, Schedule, Trustpoint


def read_fleet_stats(session: Session, *, now: datetime) -> FleetSnapshot:
    statuses = {
        (ca, identity): count
        for ca, identity, count in session.exec(
            select(Trustpoint.ca_status, Trustpoint.identity_status, func.count())
            .group_by(Trustpoint.ca_status, Trustpoint.identity_status)
        ).all()
    }

    def count_before(moment: datetime):
        return func.coalesce(func.sum(case((Certificate.not_after < moment, 1), else_=0)), 0)

    windows = [count_before(now + timedelta(days=days)) for days in EXPIRY_WINDOWS_DAYS]
    row = session.exec(
        select(*windows, count_before(now), func.min(Certificate.not_after))
        .where(Certificate.role == CertificateRole.IDENTITY.value)
    ).one()
    *within, expired, earliest = row
    renewal_due = dict(session.exec(
        select(Trustpoint.enrollment_type, func.count())
        .where(Trustpoint.renewal_due_at <= now).group_by(Trustpoint.enrollment_type)
    ).all())
    last_runs = {name: started.timestamp() for name, started in session.exec(
        select(Schedule.name, Schedule.last_run_at).where(Schedule.last_run_at.is_not(None))).all()}
    bundle = session.get(CaBundleState, "certfleet")
    current = bundle.version if bundle is not None else ""
    # One pass counting both: a GROUP BY on the comparison would bind the version twice, and
    # PostgreSQL does not take two parameters for the same expression.
    devices, on_current = session.exec(select(
        func.count(), func.coalesce(func.sum(case((Device.bundle_version == current, 1), else_=0)), 0))).one()
    jobs_unfinished, oldest_queued_age, renewals_in_progress = _unfinished_jobs(session, now=now)
    renewals_failed = dict(session.exec(
        select(Trustpoint.enrollment_type, func.count())
        .where(Trustpoint.renewal_failures > 0).group_by(Trustpoint.enrollment_type)
    ).all())
    return FleetSnapshot(
        jobs_unfinished=jobs_unfinished,
        oldest_queued_age=oldest_queued_age,
        renewals_in_progress=renewals_in_progress,
        renewals_failed=renewals_failed,
        ca_bundle_version=current,
        ca_bundle_sha256=bundle.sha256 if bundle is not None else "",
        ca_bundle_last_modified=bundle.last_modified.timestamp() if bundle and bundle.last_modified else None,
        devices_on_bundle={"current": int(on_current), "older": devices - int(on_current)}
        if bundle is not None else {"older": devices},
        renewal_due=renewal_due,
        schedule_last_runs=last_runs,
        statuses=statuses,
        expiring_within={days: int(n) for days, n in zip(EXPIRY_WINDOWS_DAYS, within, strict=True)},
        expired=int(expired),
        earliest_expiry=earliest.timestamp() if earliest is not None else None,
        alerts_open=count_open(session),
    )


def _unfinished_jobs(session: Session, *, now: datetime
                     ) -> tuple[dict[tuple[str, str], int], dict[str, float], dict[str, int]]:
    """(count by (kind, state), seconds the oldest ready queued job of each kind has waited, renewal
    jobs unfinished by method). A queued job is ready from its creation, or from when its retry or
    CA wait is due; one whose retry is not due yet has waited 0 s."""
    ready_since = func.coalesce(Job.next_attempt_at, Job.created_at)
    rows = session.exec(
        select(Job.kind, Job.state, Job.reason, Trustpoint.enrollment_type, func.count(), func.min(ready_since))
        .outerjoin(Trustpoint, Trustpoint.id == Job.trustpoint_id)
        .where(Job.state.in_((JobState.QUEUED.value, JobState.RUNNING.value)))
        .group_by(Job.kind, Job.state, Job.reason, Trustpoint.enrollment_type)
    ).all()
    counts: dict[tuple[str, str], int] = {}
    ages: dict[str, float] = {}
    renewals: dict[str, int] = {}
    for kind, state, reason, method, count, oldest in rows:
        counts[(kind, state)] = counts.get((kind, state), 0) + count
        if reason == JobReason.RENEWAL.value and method:
            renewals[method] = renewals.get(method, 0) + count
        if state == JobState.QUEUED.value and oldest is not None:
            waited = max(0.0, (now - oldest).total_seconds())
            ages[kind] = max(ages.get(kind, 0.0), waited)
    return counts, ages, renewals
