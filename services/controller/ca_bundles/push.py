"""Pushing certfleet's CA bundle to devices: a batch of bundle-update jobs, one per device, on
the bulk queue, with the progress and grouped failures any batch has.

After a replacement every managed device gets a job. The drift pass finds the devices that do
not hold the current version (they were unreachable during the push, or registered since) and
have no bundle job under way, and pushes to them: a device back online gets the bundle then.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import dramatiq
from sqlalchemy import exists
from sqlmodel import Session, select

from services.controller.crud.batches import BUNDLE_UPDATE, chunks, progress_fields
from services.controller.queueing.publishing import publish_jobs
from shared.db import insert_rows
from shared.domains import GLOBAL_DOMAIN_ID
from shared.enums import JobKind, JobReason, JobState
from shared.errors import NotFoundError
from shared.events import BULK_QUEUE
from shared.models import Batch, CaBundleState, Device, Job
from shared.settings import Settings

_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


def push_to_devices(
    session: Session, *, settings: Settings, version: str, now: datetime, requested_by: str,
    only_drifted: bool = False,
) -> tuple[Batch | None, list[uuid.UUID]]:
    """Add a push batch and its jobs (not committed): every device, or with ``only_drifted`` those
    not on ``version`` with no bundle job unfinished. None when there is no device to push to."""
    query = select(Device.id, Device.domain_id)
    if only_drifted:
        busy = exists().where(Job.device_id == Device.id, Job.kind == JobKind.BUNDLE_UPDATE.value,
                              Job.state.in_(_UNFINISHED))
        query = query.where(Device.bundle_version != version, ~busy)
    devices = session.exec(query.order_by(Device.id)).all()
    if not devices:
        return None, []
    batch = Batch(domain_id=GLOBAL_DOMAIN_ID, action=BUNDLE_UPDATE, selection={"ca_bundle_version": version,
                  "devices": "drifted" if only_drifted else "all"}, selected=len(devices),
                  requested_by=requested_by, created_at=now)
    session.add(batch)
    session.flush()
    lease_until = now + timedelta(seconds=settings.job_lease_seconds)
    by = f" by {requested_by}" if requested_by else ""
    step = [{"at": now.isoformat(), "step": "requested", "detail": f"CA bundle version {version} push {batch.id}{by}"}]
    job_ids: list[uuid.UUID] = []
    for chunk in chunks(devices):
        jobs = [dict(id=uuid.uuid4(), kind=JobKind.BUNDLE_UPDATE.value, trustpoint_id=None, device_id=device_id,
                     domain_id=domain_id, trustpoint_name="", state=JobState.QUEUED.value, attempts=0,
                     max_attempts=settings.job_max_attempts, lease_expires_at=lease_until, steps=step,
                     batch_id=batch.id, reason=JobReason.BULK.value, created_at=now)
                for device_id, domain_id in chunk]
        insert_rows(session, Job.__table__, jobs)
        job_ids += [job["id"] for job in jobs]
    return batch, job_ids


def push_progress(session: Session, batch_id: uuid.UUID, *, now: datetime) -> dict:
    """A push batch's progress fields (as any batch's), with its version; NotFoundError for any
    other batch."""
    batch = session.get(Batch, batch_id)
    if batch is None or batch.action != BUNDLE_UPDATE:
        raise NotFoundError(f"CA bundle push {batch_id} not found", code="push_not_found")
    return {**progress_fields(session, batch, now=now), "action": batch.action,
            "version": str(batch.selection.get("ca_bundle_version", ""))}


def publish_push(broker: dramatiq.Broker, job_ids: list[uuid.UUID], *, now: datetime) -> int:
    """Publish committed push jobs; what the broker refuses, the reconciler publishes later."""
    return publish_jobs(broker, [(JobKind.BUNDLE_UPDATE, job_id, BULK_QUEUE) for job_id in job_ids],
                        published_at=now)


def push_drifted(session: Session, broker: dramatiq.Broker, *, settings: Settings, now: datetime,
                 fence=lambda session: None) -> str:
    """The drift pass: push the current bundle to the devices that lack it."""
    current = session.get(CaBundleState, "certfleet")
    if current is None or not current.version:
        session.rollback()
        return "no CA bundle installed yet"
    batch, job_ids = push_to_devices(session, settings=settings, version=current.version, now=now,
                                     requested_by="schedule ca-bundle-drift", only_drifted=True)
    if batch is None:
        session.rollback()
        return f"every device holds CA bundle version {current.version}"
    fence(session)
    session.commit()
    publish_push(broker, job_ids, now=now)
    plural = "s" if len(job_ids) != 1 else ""
    return f"CA bundle version {current.version} pushed again to {len(job_ids)} device{plural}"
