"""``/api/v1/domains``: the domain tree, as far as the caller's token reaches (its home domain and
the domains below it; any other answers 404). Every role reads; creating a domain, setting its
keyring policy and deleting a leaf domain need admin."""

from __future__ import annotations

import uuid
from datetime import datetime

import dramatiq
from fastapi import APIRouter, Depends, Query, Response
from sqlmodel import Session

from services.controller.api.auth import Principal, writes_need
from services.controller.api.deps import (
    Paging,
    get_broker,
    get_now,
    get_paging,
    get_session,
    get_settings,
    load_scope,
)
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.domains import DomainCreate, DomainDeletionPublic, DomainPublic, DomainUpdate
from services.controller.crud import domains as crud
from services.controller.domains import deletion
from services.controller.queueing.publishing import publish_jobs
from shared.enums import JobKind, Role
from shared.events import BULK_QUEUE
from shared.keyring_policy import OFF, KeyringPolicy, load_policies
from shared.models import Domain
from shared.settings import Settings

authorize_domains = writes_need(Role.ADMIN)
router = APIRouter(prefix="/domains", tags=["domains"], dependencies=[Depends(authorize_domains)])


def _public(session: Session, domain: Domain, policies: dict[uuid.UUID, KeyringPolicy], *,
            now: datetime) -> DomainPublic:
    policy = policies.get(domain.id, OFF)
    under_way = deletion.view(session, domain, now=now) if domain.deletion_requested_at is not None else None
    return DomainPublic.model_validate(domain, from_attributes=True).model_copy(update={
        "effective_auto_regenerate_keyring": policy.enabled, "auto_regenerate_keyring_from": policy.source_id,
        "deletion": under_way})


def _reachable(session: Session, principal: Principal, domain_id: uuid.UUID) -> Domain:
    """The domain, when the caller's token reaches it (404 otherwise, as for one that does not exist)."""
    load_scope(session, domain_id, within=principal.domain_id)
    return crud.get_domain(session, domain_id=domain_id)


@router.get("", response_model=Page[DomainPublic])
def list_domains(session: Session = Depends(get_session), paging: Paging = Depends(get_paging),
                 principal: Principal = Depends(authorize_domains), now: datetime = Depends(get_now)):
    """The caller's home domain and the domains below it, oldest first."""
    among = None if principal.installation_wide else load_scope(session, principal.domain_id).subtree
    rows, total = crud.list_domains(session, offset=paging.offset, limit=paging.limit, among=among)
    policies = load_policies(session)
    return Page[DomainPublic](items=[_public(session, d, policies, now=now) for d in rows], total=total,
                              offset=paging.offset, limit=paging.limit)


@router.post("", response_model=DomainPublic, status_code=201)
def create_domain(body: DomainCreate, session: Session = Depends(get_session),
                  principal: Principal = Depends(authorize_domains), now: datetime = Depends(get_now)):
    """A subdomain of ``parent_id`` (default: the caller's home domain)."""
    parent = _reachable(session, principal, body.parent_id or principal.domain_id)
    domain = crud.create_domain(session, name=body.name, parent_id=parent.id,
                                auto_regenerate_keyring=body.auto_regenerate_keyring)
    session.commit()
    return _public(session, domain, load_policies(session), now=now)


@router.get("/{domain_id}", response_model=DomainPublic)
def get_domain(domain_id: uuid.UUID, session: Session = Depends(get_session),
               principal: Principal = Depends(authorize_domains), now: datetime = Depends(get_now)):
    """The domain, with its deletion's state and progress while one is under way."""
    return _public(session, _reachable(session, principal, domain_id), load_policies(session), now=now)


@router.patch("/{domain_id}", response_model=DomainPublic)
def update_domain(domain_id: uuid.UUID, body: DomainUpdate, session: Session = Depends(get_session),
                  principal: Principal = Depends(authorize_domains), now: datetime = Depends(get_now)):
    """Set the domain's keyring policy: ``{"auto_regenerate_keyring": true}`` regenerates invalid default
    keyrings of its subtree's devices (unless a subdomain says false); null follows the parent again."""
    domain = _reachable(session, principal, domain_id)
    if "auto_regenerate_keyring" in body.model_fields_set:
        domain = crud.set_keyring_policy(session, domain_id=domain.id,
                                         auto_regenerate_keyring=body.auto_regenerate_keyring)
        session.commit()
    return _public(session, domain, load_policies(session), now=now)


@router.delete("/{domain_id}", response_model=DomainDeletionPublic, status_code=202,
               responses={200: {"model": DomainDeletionPublic,
                                "description": "Completed at once: nothing was left to remove, or force"}})
def delete_domain(
    domain_id: uuid.UUID,
    response: Response,
    target_domain_id: uuid.UUID | None = Query(
        None, description="where the devices go (default: the parent domain); any domain the token reaches"),
    force: bool = Query(False, description="forget the trustpoints not yet removed from the devices (they stay on "
                                           "the devices) instead of removing them; waits for no job"),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings),
    broker: dramatiq.Broker = Depends(get_broker),
    principal: Principal = Depends(authorize_domains),
    now: datetime = Depends(get_now),
):
    """Delete a leaf domain: remove its devices' trustpoints from the devices (a delete job each,
    202 with their progress; ``GET`` the domain to follow it), then move the devices to the target
    domain and delete the domain with its enrollment objects. Asked again after delete jobs failed, it
    retries them; with nothing left it completes at once (200). Never Global, nor the token's own
    home domain; refused with the reason while the domain has child domains, webhooks, unfinished
    jobs on its devices, or enrollment objects other domains' trustpoints use."""
    domain = _reachable(session, principal, domain_id)
    asked = deletion.request_deletion(
        session, reach=load_scope(session, principal.domain_id), home_id=principal.domain_id, domain=domain,
        target_id=target_domain_id, force=force, requested_by=principal.describe(), settings=settings, now=now)
    session.commit()
    publish_jobs(broker, [(JobKind.DELETE, job_id, BULK_QUEUE) for job_id in asked.job_ids], published_at=now)
    if asked.completed:
        response.status_code = 200
    else:
        response.headers["Location"] = f"/api/v1/domains/{domain_id}"
    return asked.view
