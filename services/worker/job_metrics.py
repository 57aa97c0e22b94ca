"""The workers' Prometheus counters, updated where a job's outcome is known.

A Dramatiq middleware only sees messages and exceptions; most outcomes here are not
exceptions (a duplicate skipped, a retry scheduled in the database, a permanent failure
recorded on the trustpoint), so the job runner reports them through these functions.
"""

from __future__ import annotations

from shared.enums import JobKind
from shared.metrics import ENROLLMENT_DURATION, ENROLLMENT_FAILURES, ENROLLMENTS, JOB_RETRIES, JOBS, bounded_code

ENROLLING = (JobKind.ENROLL, JobKind.RE_ENROLL)


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
