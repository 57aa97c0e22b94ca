from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query
from sqlmodel import Session

from services.controller.api.auth import authorize
from services.controller.api.deps import Paging, get_paging, get_scope, get_session
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.jobs import JobPublic
from services.controller.queueing import jobs as crud
from services.controller.rules.scope import DomainScope
from shared.enums import JobKind, JobReason, JobState

router = APIRouter(prefix="/domains/{domain_id}/jobs", tags=["jobs"], dependencies=[Depends(authorize)])


@router.get("", response_model=Page[JobPublic])
def list_jobs(
    state: JobState | None = Query(None),
    kind: JobKind | None = Query(None),
    device_id: uuid.UUID | None = Query(None),
    reason: JobReason | None = Query(None, description="why the jobs exist, e.g. policy: a domain policy's "
                                     "keyring regenerations"),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    paging: Paging = Depends(get_paging),
):
    rows, total = crud.list_jobs(session, scope=scope, offset=paging.offset, limit=paging.limit,
                                 state=state, kind=kind, device_id=device_id, reason=reason)
    return Page[JobPublic](items=[JobPublic.of(j) for j in rows], total=total,
                           offset=paging.offset, limit=paging.limit)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
            session: Session = Depends(get_session)):
    return JobPublic.of(crud.get_job(session, scope=scope, job_id=job_id))
