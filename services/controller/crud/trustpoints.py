"""Trustpoints: installing an enrollment object on a device ("Add"), and the
re-enroll, refresh and delete actions. Each writes its intent and a job in one transaction;
the router publishes the job after the commit."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime

from sqlalchemy import Row, Select, Uuid, bindparam, func, true, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.controller.crud.devices import get_device
from services.controller.crud.domains import ensure_not_being_deleted
from services.controller.crud.enrollment_objects import get_object
from services.controller.queueing.jobs import ensure_no_unfinished_job, new_job
from services.controller.rules.scope import DomainScope
from services.controller.rules.trustpoint_actions import action_of
from services.controller.short_cache import ShortCache
from shared import object_reach
from shared.db import plain_rows
from shared.enums import EnrollmentType, JobKind
from shared.errors import ConflictError, NotFoundError
from shared.models import Certificate, Device, EnrollmentObject, Job, Trustpoint
from shared.settings import Settings
from shared.states import Status, transition

#: List totals worth remembering for a moment (see :mod:`..short_cache`).
_TOTALS = ShortCache(1.0)
CACHE_TOTALS_FROM = 10_000

#: The trustpoint columns a list shows: not the stored CSR and pending PEMs, which can be large.
LIST_COLUMNS = (
    Trustpoint.id, Trustpoint.name, Trustpoint.device_id, Trustpoint.domain_id, Trustpoint.enrollment_object_id,
    Trustpoint.enrollment_type, Trustpoint.ca_status, Trustpoint.identity_status, Trustpoint.error_code,
    Trustpoint.error_message, Trustpoint.created_at, Trustpoint.updated_at, Trustpoint.status_changed_at,
    Trustpoint.renewal_due_at, Trustpoint.last_renewal_at, Trustpoint.renewal_failures, Trustpoint.renewal_error_code,
    Trustpoint.renewal_error_message, Trustpoint.revoked_at, Trustpoint.revocation_reason,
)

#: The certificate columns a list shows (no PEM, no parsing).
SUMMARY_COLUMNS = (
    Certificate.trustpoint_id, Certificate.role, Certificate.chain_position, Certificate.subject,
    Certificate.issuer, Certificate.serial_number, Certificate.not_before, Certificate.not_after,
    Certificate.key_algorithm, Certificate.key_size, Certificate.signature_algorithm,
    Certificate.fingerprint_sha256,
)


def get_trustpoint(
    session: Session, *, scope: DomainScope, device_id: uuid.UUID, name: str
) -> tuple[Trustpoint, Device]:
    device = get_device(session, scope=scope, device_id=device_id)
    trustpoint = session.exec(
        select(Trustpoint).where(Trustpoint.device_id == device.id, Trustpoint.name == name)
    ).first()
    if trustpoint is None:
        raise NotFoundError(f"device {device.name} has no trustpoint named {name!r}")
    return trustpoint, device


def list_trustpoints(
    session: Session, *, scope: DomainScope, offset: int, limit: int, device_id: uuid.UUID | None = None,
    ca_status: Status | None = None, identity_status: Status | None = None,
) -> tuple[list[Row], int]:
    """Trustpoints of the scope's subtree as rows of :data:`LIST_COLUMNS` and ``device_name``: one
    filtered count and one page query on indexed columns (domain, statuses, device). Plain rows, not
    ORM objects: a polled list only reads them."""
    filters = {"subtree": None if scope.is_root else sorted(scope.subtree), "device_id": device_id,
               "ca_status": None if ca_status is None else Status(ca_status).value,
               "identity_status": None if identity_status is None else Status(identity_status).value}
    values = {name: value for name, value in filters.items() if value is not None}
    count, page = _list_queries(frozenset(values))
    # A total in the tens of thousands is remembered for a second: a polled list stays cheap.
    key = (session.get_bind().url, scope.domain_id, device_id, ca_status, identity_status)
    total = _TOTALS.get(key, lambda: plain_rows(session, count, values)[0][0],
                        keep=lambda n: n >= CACHE_TOTALS_FROM)
    return plain_rows(session, page, {**values, "offset": offset, "limit": limit}), total


@functools.cache
def _list_queries(filters: frozenset[str]) -> tuple[Select, Select]:
    """The count and the page of :func:`list_trustpoints` with these filters, each value a bound
    parameter of the same name: built once, so that a polled list neither builds its statements
    again nor has the cached compilation fitted to new ones (about a third of their CPU)."""
    conditions = []
    if "subtree" in filters:
        conditions.append(Trustpoint.domain_id.in_(bindparam("subtree", expanding=True)))
    for name in ("device_id", "ca_status", "identity_status"):
        if name in filters:
            conditions.append(getattr(Trustpoint, name) == bindparam(name))
    count = select(func.count()).select_from(Trustpoint).where(*conditions)
    page = (
        select(*LIST_COLUMNS, Device.name.label("device_name"))
        .join(Device, Device.id == Trustpoint.device_id)
        .where(*conditions)
        .order_by(Trustpoint.id)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )
    return count, page


def certificate_summaries(session: Session, trustpoint_ids: list[uuid.UUID]) -> dict[uuid.UUID, list]:
    """Summary rows of the certificates of these trustpoints, by trustpoint, in chain order."""
    found: dict[uuid.UUID, list] = {}
    if not trustpoint_ids:
        return found
    query = certificate_summaries_query(session.get_bind().dialect.name)
    for row in plain_rows(session, query, {"page": trustpoint_ids}):
        found.setdefault(row.trustpoint_id, []).append(row)
    return found


@functools.cache
def certificate_summaries_query(dialect: str):
    """The query of :func:`certificate_summaries`, the trustpoints' ids bound as ``page``: rows
    ordered by role and chain position within each trustpoint. Built once per dialect: building
    it anew for each page cost a polled list as much CPU as running it."""
    if dialect == "postgresql":
        return _certificates_per_trustpoint()
    return (select(*SUMMARY_COLUMNS).where(Certificate.trustpoint_id.in_(bindparam("page", expanding=True)))
            .order_by(Certificate.trustpoint_id, Certificate.role, Certificate.chain_position))


def _certificates_per_trustpoint():
    """One index lookup per trustpoint, whatever PostgreSQL's statistics say.

    Without fresh statistics (right after a bulk enrollment, or with autovacuum off), the
    planner takes ``trustpoint_id IN (…a page of ids…)`` for half the table and scans all of
    it: a list polled during a 50,000-device enrollment slowed down with every certificate
    issued. Asked per id in a LATERAL subquery, which ``OFFSET 0`` keeps from being flattened
    into a join, the index is always the cheaper plan.
    """
    page = bindparam("page", type_=postgresql.ARRAY(Uuid))
    ids = func.unnest(page).table_valued("id").render_derived(name="page")
    per_trustpoint = (
        select(*SUMMARY_COLUMNS)
        .where(Certificate.trustpoint_id == ids.c.id)
        .order_by(Certificate.role, Certificate.chain_position)
        .offset(0)
        .lateral("certificates")
    )
    return select(per_trustpoint).select_from(ids).join(per_trustpoint, true())


def certificates_of(session: Session, trustpoint_id: uuid.UUID) -> list[Certificate]:
    return list(session.exec(
        select(Certificate).where(Certificate.trustpoint_id == trustpoint_id)
        .order_by(Certificate.role, Certificate.chain_position)
    ).all())


def _duplicate(device: Device, name: str) -> ConflictError:
    return ConflictError(
        f"device {device.name} already has a trustpoint named {name!r}; re-enroll or delete it instead",
        code="duplicate_trustpoint",
    )


def add_trustpoint(
    session: Session, *, scope: DomainScope, device_id: uuid.UUID, enrollment_object_id: uuid.UUID,
    settings: Settings, now: datetime, requested_by: str = "",
) -> tuple[Trustpoint, Device, Job]:
    device = get_device(session, scope=scope, device_id=device_id)
    ensure_not_being_deleted(session, device.domain_id, what=f"adding a trustpoint to device {device.name}")
    obj = get_object(session, scope=scope, object_id=enrollment_object_id)
    if obj.enrollment_type == EnrollmentType.PKCS12 and obj.pkcs12_blob is None:
        raise ConflictError(
            f"enrollment object {obj.name} has no PKCS12 file yet; upload the file before adding it",
            code="pkcs12_file_missing",
        )
    name = obj.name
    if session.exec(select(Trustpoint.id).where(Trustpoint.device_id == device.id,
                                                Trustpoint.name == name)).first():
        raise _duplicate(device, name)
    trustpoint = Trustpoint(
        device_id=device.id, domain_id=device.domain_id, enrollment_object_id=obj.id, name=name,
        enrollment_type=obj.enrollment_type, ca_status=Status.IN_PROGRESS.value,
        identity_status=Status.IN_PROGRESS.value, created_at=now, updated_at=now, status_changed_at=now,
    )
    session.add(trustpoint)
    try:
        session.flush()
    except IntegrityError:  # added by a concurrent request since the check
        session.rollback()
        raise _duplicate(device, name) from None
    job = new_job(session, kind=JobKind.ENROLL, trustpoint=trustpoint, settings=settings, now=now,
                  requested_by=requested_by)
    return trustpoint, device, job


def ensure_deployable(session: Session, trustpoint: Trustpoint, device: Device, *, what: str) -> None:
    """Refuse an action that deploys the trustpoint's enrollment object to the device (re-enroll,
    installing an imported certificate) in a domain being deleted, or once the device's domain may
    no longer use the object (it was moved): 409 enrollment_object_not_usable, saying what to do.
    Refresh and delete only read or remove what the device has: they stay allowed."""
    ensure_not_being_deleted(session, trustpoint.domain_id, what=f"{what} trustpoint {trustpoint.name}")
    obj = session.get(EnrollmentObject, trustpoint.enrollment_object_id)
    if obj is None:
        return
    why = object_reach.refusal(session, trustpoint=trustpoint.name, device=device.name, object_name=obj.name,
                               object_domain_id=obj.domain_id, domain_id=trustpoint.domain_id)
    if why is not None:
        raise ConflictError(why, code=object_reach.CODE)


def start_action(
    session: Session, *, scope: DomainScope, device_id: uuid.UUID, name: str, kind: JobKind,
    settings: Settings, now: datetime, requested_by: str = "",
) -> tuple[Trustpoint, Device, Job]:
    """Re-enroll, refresh or delete a trustpoint: one job at a time per trustpoint."""
    trustpoint, device = get_trustpoint(session, scope=scope, device_id=device_id, name=name)
    # Write to the row before checking its jobs: PostgreSQL locks the row and SQLite takes its
    # write lock, so two requests for one trustpoint cannot both find "no job running".
    session.execute(
        update(Trustpoint).where(Trustpoint.id == trustpoint.id).values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(trustpoint)
    ensure_no_unfinished_job(session, trustpoint_id=trustpoint.id,
                             what=f"trustpoint {trustpoint.name} of device {device.name}")
    if JobKind(kind) is JobKind.RE_ENROLL:
        ensure_deployable(session, trustpoint, device, what="re-enrolling")
    if action_of(kind).restarts_statuses:
        transition(trustpoint, now=now, ca=Status.IN_PROGRESS, identity=Status.IN_PROGRESS)
        session.add(trustpoint)
    job = new_job(session, kind=kind, trustpoint=trustpoint, settings=settings, now=now,
                  requested_by=requested_by)
    return trustpoint, device, job
