"""Deleting a leaf domain (``DELETE /api/v1/domains/{id}``).

First the enrollments of the domain's devices are removed from the devices: one delete job per
trustpoint, in one batch (the bulk queue, progress from the jobs, as any batch). Meanwhile the
domain is marked as being deleted and nothing new is made in it. Once no trustpoint is left and no
job on its devices is unfinished, the deletion completes in one transaction: the devices, with their
registration and job history, go to the target domain (the parent unless the request named
another), its alerts and export records go with them, API tokens homed there are revoked (and listed
under the target), its bulk-operation records and enrollment objects are removed, and the domain row
is deleted. The ``domain-deletions`` schedule completes deletions that are ready, or the DELETE asked
again does; completing twice does nothing the second time.

A delete job that fails (the device stayed unreachable) leaves its trustpoint and the deletion
waits: DELETE again starts delete jobs for what is left; ``force=true`` forgets what is left instead
(the enrollments stay on the devices). What the deletion cannot handle by itself (child domains,
webhooks, other domains' trustpoints using its enrollment objects) refuses it, saying what to do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, update
from sqlmodel import Session, select

from services.controller.api.schemas.domains import DeletionJobs, DomainDeletionPublic
from services.controller.crud.batches import DELETE_DOMAIN, chunks, progress_fields
from services.controller.crud.bulk_actions import lock_idle
from services.controller.crud.domains import ensure_not_being_deleted
from services.controller.queueing.jobs import UNFINISHED
from services.controller.rules.domain_deletion import SHOWN, DeletionState, Holdings, detail, listed, state_of
from services.controller.rules.scope import DomainScope
from shared.db import insert_rows
from shared.enums import JobKind, JobReason, JobState
from shared.errors import ConflictError, NotFoundError, ValidationError
from shared.models import (
    Alert,
    ApiToken,
    AuditEntry,
    Batch,
    Certificate,
    Device,
    Domain,
    EnrollmentObject,
    Job,
    Trustpoint,
    Webhook,
)
from shared.settings import Settings


@dataclass
class Requested:
    """What a DELETE did: the deletion as it stands, the delete jobs to publish, and whether it completed."""

    view: DomainDeletionPublic
    job_ids: list[uuid.UUID] = field(default_factory=list)
    completed: bool = False


# --- reading -----------------------------------------------------------------------------------------


def _device_ids(session: Session, domain_id: uuid.UUID) -> list[uuid.UUID]:
    return list(session.exec(select(Device.id).where(Device.domain_id == domain_id)).all())


def _unfinished(session: Session, device_ids: list[uuid.UUID]) -> tuple[int, uuid.UUID | None]:
    """How many jobs on these devices are unfinished, and one of them."""
    count, example = 0, None
    for chunk in chunks(device_ids):
        unfinished = (Job.device_id.in_(chunk), Job.state.in_(UNFINISHED))
        count += session.exec(select(func.count()).select_from(Job).where(*unfinished)).one()
        example = example or session.exec(select(Job.id).where(*unfinished).limit(1)).first()
    return count, example


def holdings(session: Session, domain: Domain) -> Holdings:
    """What the domain still holds, as its deletion sees it."""
    children = tuple(session.exec(select(Domain.name).where(Domain.parent_id == domain.id)
                                  .order_by(Domain.name)).all())
    webhooks = tuple(f"{name or webhook_id} ({url})" for webhook_id, name, url in session.exec(
        select(Webhook.id, Webhook.name, Webhook.url).where(Webhook.domain_id == domain.id)
        .order_by(Webhook.created_at)).all())
    outside = (Trustpoint.enrollment_object_id == EnrollmentObject.id, EnrollmentObject.domain_id == domain.id,
               Trustpoint.domain_id != domain.id)
    used_total = session.exec(select(func.count()).select_from(Trustpoint).join(EnrollmentObject, outside[0])
                              .where(*outside[1:])).one()
    used = tuple(f"trustpoint {tp} of device {device} (object {obj})" for tp, device, obj in session.exec(
        select(Trustpoint.name, Device.name, EnrollmentObject.name).join(EnrollmentObject, outside[0])
        .join(Device, Device.id == Trustpoint.device_id).where(*outside[1:])
        .order_by(Device.name, Trustpoint.name).limit(SHOWN)).all()) if used_total else ()
    device_ids = _device_ids(session, domain.id)
    unfinished, _ = _unfinished(session, device_ids)
    trustpoints = session.exec(select(func.count()).select_from(Trustpoint)
                               .where(Trustpoint.domain_id == domain.id)).one()
    return Holdings(children=children, webhooks=webhooks, used_outside=used, used_outside_total=used_total,
                    unfinished_jobs=unfinished, trustpoints=trustpoints, devices=len(device_ids))


def _target_of(session: Session, domain: Domain) -> Domain:
    """Where the devices go: the target named, or the parent when there is none (or it was deleted since)."""
    target = session.get(Domain, domain.deletion_target_id) if domain.deletion_target_id else None
    return target if target is not None and target.id != domain.id else session.get(Domain, domain.parent_id)


def _jobs(session: Session, domain: Domain, *, now: datetime) -> DeletionJobs | None:
    batch = session.get(Batch, domain.deletion_batch_id) if domain.deletion_batch_id else None
    return None if batch is None else DeletionJobs(**progress_fields(session, batch, now=now))


def view(session: Session, domain: Domain, *, now: datetime, held: Holdings | None = None) -> DomainDeletionPublic:
    """The deletion under way in ``domain`` (which must have one), as the API shows it."""
    held = held or holdings(session, domain)
    state = state_of(held, domain=domain.name)
    target = _target_of(session, domain)
    return DomainDeletionPublic(
        domain_id=domain.id, domain_name=domain.name, state=state,
        detail=detail(held, state, domain=domain.name, target=target.name), target_domain_id=target.id,
        requested_at=domain.deletion_requested_at, requested_by=domain.deletion_requested_by,
        devices=held.devices, trustpoints=held.trustpoints, jobs=_jobs(session, domain, now=now),
    )


# --- asking for it -----------------------------------------------------------------------------------


def _refused(message: str, code: str, **extensions) -> ConflictError:
    error = ConflictError(message, code=code)
    if extensions:
        error.extensions = extensions
    return error


def _check_target(session: Session, *, reach: DomainScope, domain: Domain, target_id: uuid.UUID) -> Domain:
    if target_id == domain.id:
        raise ValidationError(f"the devices of domain {domain.name} cannot move to the domain being deleted: name "
                              "another domain, or leave target_domain_id out for its parent",
                              code="invalid_deletion_target")
    target = session.get(Domain, target_id)
    if target is None or not reach.sees(target.id):
        raise NotFoundError(f"domain {target_id} not found")
    ensure_not_being_deleted(session, target.id, what="moving devices into it")
    return target


def _check_first_request(session: Session, domain: Domain, held: Holdings) -> None:
    """The refusals of a new deletion, each saying why and what to do."""
    for code, message in held.blockers(domain.name):
        raise _refused(message, code)
    if held.unfinished_jobs:
        _, job_id = _unfinished(session, _device_ids(session, domain.id))
        raise _refused(f"{held.unfinished_jobs} job(s) on the devices of domain {domain.name} are unfinished (e.g. job "
                       f"{job_id}): wait for them to end (GET their jobs), then delete the domain",
                       "domain_devices_busy", job_id=str(job_id))


def request_deletion(
    session: Session, *, reach: DomainScope, home_id: uuid.UUID, domain: Domain, target_id: uuid.UUID | None,
    force: bool, requested_by: str, settings: Settings, now: datetime,
) -> Requested:
    """Start the deletion of ``domain`` (reachable by the caller), retry it, or complete it (not
    committed; the caller commits, then publishes the delete jobs)."""
    if domain.parent_id is None:
        raise _refused(f"domain {domain.name} is the root of the domain tree: it cannot be deleted", "root_domain")
    if domain.id == home_id:
        raise _refused(f"domain {domain.name} is the home domain of the token asking: a token cannot delete the "
                       "domain it acts from; an admin of a domain above it can", "home_domain")
    target = _check_target(session, reach=reach, domain=domain, target_id=target_id) if target_id else None
    held = holdings(session, domain)
    if held.children:
        code, message = held.blockers(domain.name)[0]
        raise _refused(message, code, children=list(held.children))
    pending = domain.deletion_requested_at is not None
    if pending:
        state = state_of(held, domain=domain.name, force=force)
        if state is DeletionState.REMOVING:
            raise _refused(f"the deletion of domain {domain.name} is under way: {held.unfinished_jobs} job(s) on its "
                           f"devices are unfinished; follow it with GET /api/v1/domains/{domain.id}, and ask again "
                           "(to retry failed ones, or force) once they ended", "domain_deletion_running")
        if state is DeletionState.BLOCKED:
            raise _refused(f"the deletion of domain {domain.name} cannot complete: "
                           + detail(held, state, domain=domain.name, target=""), "domain_deletion_blocked")
    else:
        _check_first_request(session, domain, held)
    marked = update(Domain).where(Domain.id == domain.id)
    if not pending:
        # The claim: of two requests at once, one marks the domain; the other finds it marked.
        marked = marked.where(Domain.deletion_requested_at.is_(None)).values(
            deletion_requested_at=now, deletion_requested_by=requested_by[:255],
            deletion_target_id=target.id if target else domain.parent_id)
    elif target is not None:
        marked = marked.values(deletion_target_id=target.id)
    else:
        marked = marked.values(deletion_target_id=Domain.deletion_target_id)  # the row's lock, nothing changed
    if session.execute(marked.execution_options(synchronize_session=False)).rowcount != 1:
        raise _refused(f"domain {domain.name} was asked to be deleted by another request a moment ago; follow it with "
                       f"GET /api/v1/domains/{domain.id}", "domain_deletion_running")
    session.refresh(domain)
    if force or not held.trustpoints:
        state, completed = complete(session, domain_id=domain.id, now=now, force=force)
        if completed is None:
            raise _refused(f"the domain {domain.name} changed while it was being deleted ({state.value}); ask again",
                           "domain_deletion_running")
        return Requested(view=completed, completed=True)
    job_ids = _delete_jobs(session, domain, previous=domain.deletion_batch_id, requested_by=requested_by,
                           settings=settings, now=now)
    session.refresh(domain)
    return Requested(view=view(session, domain, now=now), job_ids=job_ids)


def _delete_jobs(session: Session, domain: Domain, *, previous: uuid.UUID | None, requested_by: str,
                 settings: Settings, now: datetime) -> list[uuid.UUID]:
    """A batch of delete jobs, one per trustpoint left on the domain's devices (not committed).
    Homed at the parent domain, so it outlives the domain it deletes."""
    trustpoint_ids = list(session.exec(select(Trustpoint.id).where(Trustpoint.domain_id == domain.id)
                                       .order_by(Trustpoint.id)).all())
    batch = Batch(domain_id=domain.parent_id, action=DELETE_DOMAIN,
                  selection={"domain_id": str(domain.id), "domain_name": domain.name},
                  selected=len(trustpoint_ids), requested_by=requested_by[:255], created_at=now)
    session.add(batch)
    session.flush()
    # A retry replaces the batch an earlier attempt left: of two retries at once, one does.
    same = Domain.deletion_batch_id.is_(None) if previous is None else Domain.deletion_batch_id == previous
    if session.execute(update(Domain).where(Domain.id == domain.id, same).values(deletion_batch_id=batch.id)
                       .execution_options(synchronize_session=False)).rowcount != 1:
        raise _refused(f"the deletion of domain {domain.name} was retried by another request a moment ago; follow it "
                       f"with GET /api/v1/domains/{domain.id}", "domain_deletion_running")
    lease_until = now + timedelta(seconds=settings.job_lease_seconds)
    by = f" by {requested_by}" if requested_by else ""
    step = [{"at": now.isoformat(), "step": "requested", "detail": f"deletion of domain {domain.name}{by}"}]
    job_ids: list[uuid.UUID] = []
    for chunk in chunks(trustpoint_ids):
        # Locked, then checked for jobs, as a bulk action does: a trustpoint busy meanwhile is left for a retry.
        jobs = [dict(
            id=uuid.uuid4(), kind=JobKind.DELETE.value, trustpoint_id=tp_id, device_id=device_id, domain_id=domain_id,
            trustpoint_name=name, state=JobState.QUEUED.value, attempts=0, max_attempts=settings.job_max_attempts,
            lease_expires_at=lease_until, steps=step, batch_id=batch.id, reason=JobReason.BULK.value, created_at=now,
        ) for tp_id, device_id, domain_id, name in lock_idle(session, list(chunk))]
        if jobs:
            insert_rows(session, Job.__table__, jobs)
            job_ids += [job["id"] for job in jobs]
    batch.skipped = batch.selected - len(job_ids)
    session.add(batch)
    session.flush()
    return job_ids


# --- completing it -----------------------------------------------------------------------------------


def complete(session: Session, *, domain_id: uuid.UUID, now: datetime,
             force: bool = False) -> tuple[DeletionState, DomainDeletionPublic | None]:
    """Complete the deletion when nothing is left (with ``force``, forget the trustpoints left), in
    the caller's transaction (not committed). Returns the state found and, when it completed, the
    deletion as it ended; a domain already gone (or not being deleted) is left alone."""
    # The row's lock first: two controllers completing at once, the second finds the row gone.
    locked = session.execute(
        update(Domain).where(Domain.id == domain_id, Domain.deletion_requested_at.is_not(None))
        .values(deletion_target_id=Domain.deletion_target_id).execution_options(synchronize_session=False))
    if locked.rowcount != 1:
        return DeletionState.COMPLETED, None
    domain = session.get(Domain, domain_id, populate_existing=True)
    held = holdings(session, domain)
    state = state_of(held, domain=domain.name, force=force)
    if state is not DeletionState.COMPLETING:
        return state, None
    target = _target_of(session, domain)
    jobs = _jobs(session, domain, now=now)
    if held.trustpoints:  # forced: the enrollments stay on the devices, certfleet forgets them
        forgotten = select(Trustpoint.id).where(Trustpoint.domain_id == domain.id)
        session.execute(delete(Certificate).where(Certificate.trustpoint_id.in_(forgotten)))
        session.execute(delete(Trustpoint).where(Trustpoint.domain_id == domain.id))
    device_ids = _device_ids(session, domain.id)
    for chunk in chunks(device_ids):  # a device's job history goes with it
        session.execute(update(Job).where(Job.device_id.in_(chunk)).values(domain_id=target.id)
                        .execution_options(synchronize_session=False))
    moved = session.execute(update(Device).where(Device.domain_id == domain.id).values(domain_id=target.id)
                            .execution_options(synchronize_session=False)).rowcount
    for model in (Alert, AuditEntry):  # their history stays visible from the target
        session.execute(update(model).where(model.domain_id == domain.id).values(domain_id=target.id)
                        .execution_options(synchronize_session=False))
    revoked = session.execute(update(ApiToken).where(ApiToken.domain_id == domain.id, ApiToken.revoked_at.is_(None))
                              .values(revoked_at=now).execution_options(synchronize_session=False)).rowcount
    session.execute(update(ApiToken).where(ApiToken.domain_id == domain.id).values(domain_id=target.id)
                    .execution_options(synchronize_session=False))
    objects = select(EnrollmentObject.id).where(EnrollmentObject.domain_id == domain.id)
    session.execute(delete(Batch).where(or_(Batch.domain_id == domain.id, Batch.enrollment_object_id.in_(objects)))
                    .execution_options(synchronize_session=False))
    removed = session.execute(delete(EnrollmentObject).where(EnrollmentObject.domain_id == domain.id)
                              .execution_options(synchronize_session=False)).rowcount
    session.execute(delete(Domain).where(Domain.id == domain.id).execution_options(synchronize_session=False))
    session.expunge(domain)
    done = Holdings(devices=moved)
    return DeletionState.COMPLETED, DomainDeletionPublic(
        domain_id=domain.id, domain_name=domain.name, state=DeletionState.COMPLETED,
        detail=detail(done, DeletionState.COMPLETED, domain=domain.name, target=target.name),
        target_domain_id=target.id, requested_at=domain.deletion_requested_at,
        requested_by=domain.deletion_requested_by, devices=moved, trustpoints=0, jobs=jobs,
        forgotten_trustpoints=held.trustpoints, removed_enrollment_objects=removed, revoked_tokens=revoked,
    )


def run_pass(session: Session, *, now: datetime, fence: Callable[[Session], None] = lambda session: None) -> str:
    """The ``domain-deletions`` schedule: complete every deletion that is ready, each in its own
    fenced transaction; say what was done and what still waits."""
    pending = session.exec(select(Domain.id, Domain.name).where(Domain.deletion_requested_at.is_not(None))
                           .order_by(Domain.deletion_requested_at)).all()
    session.rollback()
    if not pending:
        return "no domain deletion under way"
    deleted, waiting = [], []
    for domain_id, name in pending:
        state, completed = complete(session, domain_id=domain_id, now=now)
        if completed is None:
            session.rollback()
            if state is not DeletionState.COMPLETED:  # COMPLETED here: another controller finished it
                waiting.append(f"{name} ({state.value})")
            continue
        fence(session)
        session.commit()
        deleted.append(name)
    parts = [f"{len(deleted)} domain(s) deleted" + (f" ({listed(deleted)})" if deleted else "")]
    if waiting:
        parts.append(f"{len(waiting)} waiting: {listed(waiting)}")
    return "; ".join(parts)
