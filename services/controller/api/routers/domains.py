from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from sqlmodel import Session

from services.controller.api.auth import authorize
from services.controller.api.deps import Paging, get_paging, get_session
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.domains import DomainCreate, DomainPublic
from services.controller.crud import domains as crud

router = APIRouter(prefix="/domains", tags=["domains"], dependencies=[Depends(authorize)])


@router.get("", response_model=Page[DomainPublic])
def list_domains(session: Session = Depends(get_session), paging: Paging = Depends(get_paging)):
    rows, total = crud.list_domains(session, offset=paging.offset, limit=paging.limit)
    items = [DomainPublic.model_validate(d, from_attributes=True) for d in rows]
    return Page[DomainPublic](items=items, total=total, offset=paging.offset, limit=paging.limit)


@router.post("", response_model=DomainPublic, status_code=201)
def create_domain(body: DomainCreate, session: Session = Depends(get_session)):
    domain = crud.create_domain(session, name=body.name, parent_id=body.parent_id)
    session.commit()
    return DomainPublic.model_validate(domain, from_attributes=True)


@router.get("/{domain_id}", response_model=DomainPublic)
def get_domain(domain_id: uuid.UUID, session: Session = Depends(get_session)):
    return DomainPublic.model_validate(crud.get_domain(session, domain_id=domain_id), from_attributes=True)
