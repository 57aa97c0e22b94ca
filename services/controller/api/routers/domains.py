from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from sqlmodel import Session

from services.controller.api.auth import authorize
from services.controller.api.deps import Paging, get_paging, get_session
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.domains import DomainCreate, DomainPublic, DomainUpdate
from services.controller.crud import domains as crud
from shared.keyring_policy import OFF, KeyringPolicy, load_policies
from shared.models import Domain

router = APIRouter(prefix="/domains", tags=["domains"], dependencies=[Depends(authorize)])


def _public(domain: Domain, policies: dict[uuid.UUID, KeyringPolicy]) -> DomainPublic:
    policy = policies.get(domain.id, OFF)
    return DomainPublic.model_validate(domain, from_attributes=True).model_copy(update={
        "effective_auto_regenerate_keyring": policy.enabled, "auto_regenerate_keyring_from": policy.source_id})


@router.get("", response_model=Page[DomainPublic])
def list_domains(session: Session = Depends(get_session), paging: Paging = Depends(get_paging)):
    rows, total = crud.list_domains(session, offset=paging.offset, limit=paging.limit)
    policies = load_policies(session)
    return Page[DomainPublic](items=[_public(d, policies) for d in rows], total=total, offset=paging.offset,
                              limit=paging.limit)


@router.post("", response_model=DomainPublic, status_code=201)
def create_domain(body: DomainCreate, session: Session = Depends(get_session)):
    domain = crud.create_domain(session, name=body.name, parent_id=body.parent_id,
                                auto_regenerate_keyring=body.auto_regenerate_keyring)
    session.commit()
    return _public(domain, load_policies(session))


@router.get("/{domain_id}", response_model=DomainPublic)
def get_domain(domain_id: uuid.UUID, session: Session = Depends(get_session)):
    return _public(crud.get_domain(session, domain_id=domain_id), load_policies(session))


@router.patch("/{domain_id}", response_model=DomainPublic)
def update_domain(domain_id: uuid.UUID, body: DomainUpdate, session: Session = Depends(get_session)):
    """Set the domain's keyring policy: ``{"auto_regenerate_keyring": true}`` regenerates invalid default
    keyrings of its subtree's devices (unless a subdomain says false); null follows the parent again."""
    domain = crud.get_domain(session, domain_id=domain_id)
    if "auto_regenerate_keyring" in body.model_fields_set:
        domain = crud.set_keyring_policy(session, domain_id=domain.id,
                                         auto_regenerate_keyring=body.auto_regenerate_keyring)
        session.commit()
    return _public(domain, load_policies(session))
