"""``/api/v1/domains``: the domain tree, as far as the caller's token reaches (its home domain and
the domains below it; any other answers 404). Every role reads; creating a domain and setting its
keyring policy need admin."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from sqlmodel import Session

from services.controller.api.auth import Principal, writes_need
from services.controller.api.deps import Paging, get_paging, get_session, load_scope
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.domains import DomainCreate, DomainPublic, DomainUpdate
from services.controller.crud import domains as crud
from shared.enums import Role
from shared.keyring_policy import OFF, KeyringPolicy, load_policies
from shared.models import Domain

authorize_domains = writes_need(Role.ADMIN)
router = APIRouter(prefix="/domains", tags=["domains"], dependencies=[Depends(authorize_domains)])


def _public(domain: Domain, policies: dict[uuid.UUID, KeyringPolicy]) -> DomainPublic:
    policy = policies.get(domain.id, OFF)
    return DomainPublic.model_validate(domain, from_attributes=True).model_copy(update={
        "effective_auto_regenerate_keyring": policy.enabled, "auto_regenerate_keyring_from": policy.source_id})


def _reachable(session: Session, principal: Principal, domain_id: uuid.UUID) -> Domain:
    """The domain, when the caller's token reaches it (404 otherwise, as for one that does not exist)."""
    load_scope(session, domain_id, within=principal.domain_id)
    return crud.get_domain(session, domain_id=domain_id)


@router.get("", response_model=Page[DomainPublic])
def list_domains(session: Session = Depends(get_session), paging: Paging = Depends(get_paging),
                 principal: Principal = Depends(authorize_domains)):
    """The caller's home domain and the domains below it, oldest first."""
    among = None if principal.installation_wide else load_scope(session, principal.domain_id).subtree
    rows, total = crud.list_domains(session, offset=paging.offset, limit=paging.limit, among=among)
    policies = load_policies(session)
    return Page[DomainPublic](items=[_public(d, policies) for d in rows], total=total, offset=paging.offset,
                              limit=paging.limit)


@router.post("", response_model=DomainPublic, status_code=201)
def create_domain(body: DomainCreate, session: Session = Depends(get_session),
                  principal: Principal = Depends(authorize_domains)):
    """A subdomain of ``parent_id`` (default: the caller's home domain)."""
    parent = _reachable(session, principal, body.parent_id or principal.domain_id)
    domain = crud.create_domain(session, name=body.name, parent_id=parent.id,
                                auto_regenerate_keyring=body.auto_regenerate_keyring)
    session.commit()
    return _public(domain, load_policies(session))


@router.get("/{domain_id}", response_model=DomainPublic)
def get_domain(domain_id: uuid.UUID, session: Session = Depends(get_session),
               principal: Principal = Depends(authorize_domains)):
    return _public(_reachable(session, principal, domain_id), load_policies(session))


@router.patch("/{domain_id}", response_model=DomainPublic)
def update_domain(domain_id: uuid.UUID, body: DomainUpdate, session: Session = Depends(get_session),
                  principal: Principal = Depends(authorize_domains)):
    """Set the domain's keyring policy: ``{"auto_regenerate_keyring": true}`` regenerates invalid default
    keyrings of its subtree's devices (unless a subdomain says false); null follows the parent again."""
    domain = _reachable(session, principal, domain_id)
    if "auto_regenerate_keyring" in body.model_fields_set:
        domain = crud.set_keyring_policy(session, domain_id=domain.id,
                                         auto_regenerate_keyring=body.auto_regenerate_keyring)
        session.commit()
    return _public(domain, load_policies(session))
