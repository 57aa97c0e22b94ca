from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query
from sqlmodel import Session

from shared.enums import JobKind, JobState

from .. import jobs as crud
from ..auth import authorize
from ..deps import Paging, get_paging, get_scope, get_session
from ..schemas.common import Page
from ..schemas.jobs import JobPublic
from ..scope import DomainScope

router = APIRouter(prefix="/domains/{domain_id}/jobs", tags=["jobs"], dependencies=[Depends(authorize)])


@router.get("", response_model=Page[JobPublic])
def list_jobs(
    state: JobState | None = Query(None),
    kind: JobKind | None = Query(None),
    device_id: uuid.UUID | None = Query(None),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    paging: Paging = Depends(get_paging),
):
    rows, total = crud.list_jobs(session, scope=scope, offset=paging.offset, limit=paging.limit,
                                 state=state, kind=kind, device_id=device_id)
    return Page[JobPublic](items=[JobPublic.of(j) for j in rows], total=total,
                           offset=paging.offset, limit=paging.limit)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
            session: Session = Depends(get_session)):
    return JobPublic.of(crud.get_job(session, scope=scope, job_id=job_id))
