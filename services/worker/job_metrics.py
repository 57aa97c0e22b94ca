"""The workers' Prometheus counters, updated where a job's outcome is known.

A Dramatiq middleware only sees messages and exceptions; most outcomes here are not
exceptions (a duplicate skipped, a retry scheduled in the database, a permanent failure
recorded on the trustpoint), so the job runner reports them through these functions.
"""

from __future__ import annotations

from shared.enums import EnrollmentType, JobKind
from shared.metrics import (
    ENROLLMENT_DURATION,
    ENROLLMENT_FAILURES,
    ENROLLMENTS,
    JOB_RETRIES,
    JOBS,
    RENEWALS,
    bounded_code,
)
from shared.renewal import RENEWABLE

ENROLLING = (JobKind.ENROLL, JobKind.RE_ENROLL)


def start_at_zero() -> None:
    """Make every outcome's series exist at 0 from the worker's start. A series born at its first
    increment starts at 1 and rate() cannot see that increment: the first burst of failed
    enrollments after a worker starts would never show on a dashboard or raise an alert."""
    for kind in JobKind:
        for outcome in ("succeeded", "failed"):
            JOBS.labels(kind=kind.value, outcome=outcome)
    for method in EnrollmentType:
        for outcome in ("succeeded", "pending", "failed"):
            ENROLLMENTS.labels(method=method.value, outcome=outcome)
    for method in RENEWABLE:
        for outcome in ("succeeded", "failed"):
            RENEWALS.labels(method=method.value, outcome=outcome)


start_at_zero()


def job_finished(kind: JobKind, outcome: str, *, method: str | None, enrollment: str | None,
                 seconds: float, code: str | None = None) -> None:
    """``outcome``: succeeded or failed (``code`` says why). ``enrollment``: succeeded, pending or
    failed, for enrollment jobs whose method (enrollment type) is known."""
    JOBS.labels(kind=kind.value, outcome=outcome).inc()
    if kind in ENROLLING and method:
        ENROLLMENTS.labels(method=method, outcome=enrollment or outcome).inc()
        ENROLLMENT_DURATION.labels(method=method).observe(seconds)
        if outcome == "failed":
            ENROLLMENT_FAILURES.labels(method=method, code=bounded_code(code)).inc()


def retry_scheduled(kind: JobKind, code: str) -> None:
    JOB_RETRIES.labels(kind=kind.value, code=bounded_code(code)).inc()
