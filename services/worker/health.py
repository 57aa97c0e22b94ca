"""Device health: reading devices' default keyrings and recording what they report.

The controller's ``device-health`` schedule publishes the ids of every device, a batch of
``CERTFLEET_HEALTH_BATCH_SIZE`` per message, on the bulk queue (no job rows: a health check
changes nothing on a device). :meth:`HealthChecker.check` handles one message: it reads the
batch's keyrings concurrently through a bounded thread pool (the process's device client
pools the connections), then writes every device's reading in one transaction with two
executemany UPDATEs:

- a device that answered: ``keyring_valid``, ``keyring_reason``, ``keyring_not_after`` and
  ``health_checked_at``, ``health_error`` cleared;
- a device that did not: ``health_error`` ("code: message") and ``health_checked_at``; its last
  known keyring fields stay, so an expired keyring does not look fixed because the device was
  away for one check.

A lost message (Redis flushed, a worker killed mid-batch) is not retried from anywhere: the next
health pass, one interval later, reads the devices again. A refresh of any trustpoint and a
keyring regeneration record their reading the same way (:func:`record_readings`).

When a device's keyring is read invalid and its domain's policy regenerates invalid keyrings
(:mod:`shared.keyring_policy`), :func:`regenerate_by_policy` adds a regenerate job (reason
``policy``) in the same transaction, unless one is unfinished for the device; it is published
on the bulk queue after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from sqlalchemy import bindparam, update
from sqlmodel import Session, select

from services.worker.context import WorkerContext
from shared.db import insert_rows, session_scope
from shared.device_api import KeyringState
from shared.device_client import DeviceAddress, DeviceClient
from shared.enums import JobKind, JobReason, JobState
from shared.errors import CertfleetError
from shared.events import BULK_QUEUE, publish_job
from shared.keyring_policy import OFF, load_policies
from shared.logging import get_logger
from shared.models import Device, Job
from shared.settings import Settings

#: Keyring reads in flight at once per worker process, over every health message it handles: well
#: below the device client's connection pool, so reads never wait for a connection.
HEALTH_THREADS = 32
_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)
_ERROR_LENGTH = 512

DEVICE = Device.__table__
_RECORD_READ = (
    update(DEVICE).where(DEVICE.c.id == bindparam("device_id"))
    .values(keyring_valid=bindparam("valid"), keyring_reason=bindparam("reason"),
            keyring_not_after=bindparam("not_after", type_=DEVICE.c.keyring_not_after.type),
            health_checked_at=bindparam("checked_at", type_=DEVICE.c.health_checked_at.type), health_error=None)
)
_RECORD_FAILURE = (
    update(DEVICE).where(DEVICE.c.id == bindparam("device_id"))
    .values(health_error=bindparam("error"),
            health_checked_at=bindparam("checked_at", type_=DEVICE.c.health_checked_at.type))
)


def log():
    # A logger per use follows the logging configuration in force (see runner.log).
    return get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class KeyringReading:
    """A device's default keyring as one read found it, or why the read failed (``error``)."""

    device_id: uuid.UUID
    valid: bool | None = None
    reason: str | None = None
    not_after: datetime | None = None
    #: "code: message" when the device did not answer usefully; the other fields are then None.
    error: str | None = None

    @classmethod
    def of(cls, device_id: uuid.UUID, state: KeyringState) -> KeyringReading:
        return cls(device_id=device_id, valid=state.valid, reason=None if state.valid else (state.reason or "invalid"),
                   not_after=state.not_valid_after)

    @classmethod
    def failed(cls, device_id: uuid.UUID, code: str, message: str) -> KeyringReading:
        return cls(device_id=device_id, error=f"{code}: {message}"[:_ERROR_LENGTH])

    @property
    def invalid(self) -> bool:
        """Read and found invalid (a failed read says nothing about the keyring)."""
        return self.error is None and self.valid is False

    def describe(self) -> str:
        """For a job's step."""
        if self.error is not None:
            return f"could not read the default keyring: {self.error}"
        until = f" (certificate valid until {self.not_after:%Y-%m-%d %H:%M} UTC)" if self.not_after else ""
        if self.valid:
            return f"default keyring valid{until}"
        ended = f" (certificate ended {self.not_after:%Y-%m-%d %H:%M} UTC)" if self.not_after else ""
        return f"default keyring invalid, reason: {self.reason}{ended}"


def read_keyring(client: DeviceClient, device: DeviceAddress, device_id: uuid.UUID) -> KeyringReading:
    """The device's keyring; a failure (no answer, a refusal, a bad answer) is a reading too."""
    try:
        return KeyringReading.of(device_id, client.get_keyring(device))
    except CertfleetError as exc:
        return KeyringReading.failed(device_id, exc.code, exc.message)
    except Exception as exc:  # one device's surprise must not lose the batch's other readings
        log().exception("keyring read failed unexpectedly", serial=device.serial)
        return KeyringReading.failed(device_id, "health_check_failed", f"unexpected {type(exc).__name__}")


def record_readings(session: Session, readings: Sequence[KeyringReading], *, now: datetime) -> None:
    """Write the readings on their devices (not committed); gone devices match no row."""
    ok, failed = [], []
    for r in sorted(readings, key=lambda r: r.device_id):  # one lock order: concurrent batches never deadlock
        if r.error is None:
            ok.append({"device_id": r.device_id, "valid": r.valid, "reason": r.reason, "not_after": r.not_after,
                       "checked_at": now})
        else:
            failed.append({"device_id": r.device_id, "error": r.error, "checked_at": now})
    if ok and failed:
        # Two statements would lock the rows in two runs; one lock in id order keeps every writer's order the same.
        session.connection().execute(select(DEVICE.c.id).where(DEVICE.c.id.in_(sorted(
            r.device_id for r in readings))).order_by(DEVICE.c.id).with_for_update())
    # Executed on the connection: the session's ORM bulk-update handling is not wanted for a Core table.
    if ok:
        session.connection().execute(_RECORD_READ, ok)
    if failed:
        session.connection().execute(_RECORD_FAILURE, failed)


@dataclass(frozen=True)
class InvalidKeyring:
    device_id: uuid.UUID
    domain_id: uuid.UUID
    serial: str
    reason: str


def invalid_keyrings(pairs: Iterable[tuple[Any, KeyringReading]]) -> list[InvalidKeyring]:
    """The (device, reading) pairs whose reading found the keyring invalid; a device has ``id``,
    ``domain_id`` and ``serial``."""
    return [InvalidKeyring(device.id, device.domain_id, device.serial, reading.reason or "invalid")
            for device, reading in pairs if reading.invalid]


def regenerate_by_policy(session: Session, invalid: Sequence[InvalidKeyring], *, settings: Settings,
                         now: datetime) -> list[uuid.UUID]:
    """Add a regenerate job (reason policy) for each device whose domain's policy asks for it and that
    has none unfinished (not committed); the new job ids.

    Called after :func:`record_readings` in the same transaction: its UPDATE holds the devices' rows
    (PostgreSQL), so a concurrent check of the same device waits and then sees this job."""
    if not invalid:
        return []
    policies = load_policies(session)
    wanted = [k for k in invalid if policies.get(k.domain_id, OFF).enabled]
    if not wanted:
        return []
    busy = set(session.exec(
        select(Job.device_id).where(Job.device_id.in_([k.device_id for k in wanted]),
                                    Job.kind == JobKind.REGENERATE_KEYRING.value, Job.state.in_(_UNFINISHED))
    ).all())
    lease_until = now + timedelta(seconds=settings.job_lease_seconds)
    jobs = []
    for k in wanted:
        if k.device_id in busy:
            continue
        policy = policies[k.domain_id]
        detail = (f"the policy of domain {policy.source_name} regenerates invalid default keyrings: device "
                  f"{k.serial}'s is invalid, reason: {k.reason}")
        jobs.append(dict(
            id=uuid.uuid4(), kind=JobKind.REGENERATE_KEYRING.value, trustpoint_id=None, device_id=k.device_id,
            domain_id=k.domain_id, trustpoint_name="", state=JobState.QUEUED.value, attempts=0,
            max_attempts=settings.job_max_attempts, lease_expires_at=lease_until,
            steps=[{"at": now.isoformat(), "step": "requested", "detail": detail}],
            reason=JobReason.POLICY.value, created_at=now,
        ))
    if jobs:
        insert_rows(session, Job.__table__, jobs)
    return [job["id"] for job in jobs]


def publish_policy_jobs(broker: dramatiq.Broker | None, job_ids: Sequence[uuid.UUID]) -> None:
    """Publish committed policy jobs on the bulk queue; one the broker refuses, the reconciler
    publishes when its lease ends."""
    if broker is None:
        return
    for job_id in job_ids:
        try:
            publish_job(broker, JobKind.REGENERATE_KEYRING, job_id, queue=BULK_QUEUE)
        except Exception as exc:  # the broker's errors vary by backend; the stored job is what counts
            log().warning("policy job stored but not published; the reconciler will publish it",
                          job_id=str(job_id), error=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class HealthResult:
    checked: int
    invalid: int
    unreachable: int
    #: Ids in the message that name no device (removed since the pass published them).
    gone: int
    policy_jobs: int


class HealthChecker:
    """Handles health messages for one worker process: its thread pool is shared by every message the
    process runs at once, so the process never has more than HEALTH_THREADS reads in flight."""

    def __init__(self, ctx: WorkerContext, *, broker: dramatiq.Broker | None = None,
                 threads: int = HEALTH_THREADS) -> None:
        self.ctx, self.broker = ctx, broker
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="certfleet-health")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def check(self, device_ids: Sequence[str]) -> HealthResult:
        """Read and record the keyrings of the devices of one message."""
        ids = _parse_ids(device_ids)
        with session_scope(self.ctx.engine) as session:  # closed before the reads: no connection held meanwhile
            devices = session.exec(
                select(Device.id, Device.domain_id, Device.serial, Device.management_url).where(Device.id.in_(ids))
            ).all()
        readings = list(self.pool.map(lambda d: read_keyring(self.ctx.devices, d, d.id), devices))
        invalid = invalid_keyrings(zip(devices, readings, strict=True))
        with session_scope(self.ctx.engine) as session:
            now = self.ctx.clock()
            record_readings(session, readings, now=now)
            job_ids = regenerate_by_policy(session, invalid, settings=self.ctx.settings, now=now)
            session.commit()
        publish_policy_jobs(self.broker, job_ids)
        result = HealthResult(checked=len(devices), invalid=len(invalid),
                              unreachable=sum(r.error is not None for r in readings),
                              gone=len(ids) - len(devices), policy_jobs=len(job_ids))
        log().info("device health checked", devices=result.checked, invalid=result.invalid,
                   unreachable=result.unreachable, gone=result.gone, policy_jobs=result.policy_jobs)
        return result


def _parse_ids(values: Sequence[str]) -> list[uuid.UUID]:
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            log().error("health message carries something that is no device id; skipped", value=str(value)[:64])
    return ids
