"""Domains: the management center's tree, Global at the root."""

from __future__ import annotations

import uuid

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from shared.errors import ConflictError, NotFoundError, ValidationError
from shared.models import GLOBAL_DOMAIN_ID, Domain


def get_domain(session: Session, *, domain_id: uuid.UUID) -> Domain:
    domain = session.get(Domain, domain_id)
    if domain is None:
        raise NotFoundError(f"domain {domain_id} not found")
    return domain


def list_domains(session: Session, *, offset: int, limit: int,
                 among: frozenset[uuid.UUID] | None = None) -> tuple[list[Domain], int]:
    """Domains oldest first; only those ``among`` when given (a caller's subtree)."""
    conditions = [] if among is None else [Domain.id.in_(among)]
    total = session.exec(select(func.count()).select_from(Domain).where(*conditions)).one()
    query = select(Domain).where(*conditions).order_by(Domain.created_at, Domain.id).offset(offset).limit(limit)
    rows = session.exec(query).all()
    return list(rows), total


class DomainBeingDeleted(ConflictError):
    code = "domain_being_deleted"

    def __init__(self, domain: Domain, *, what: str) -> None:
        by = f" by {domain.deletion_requested_by}" if domain.deletion_requested_by else ""
        super().__init__(
            f"domain {domain.name} is being deleted (asked on {domain.deletion_requested_at:%Y-%m-%d %H:%M} UTC{by}): "
            f"{what} is refused until it is gone; GET /api/v1/domains/{domain.id} shows the deletion's progress"
        )


def ensure_not_being_deleted(session: Session, domain_id: uuid.UUID, *, what: str) -> None:
    """Refuse (409 domain_being_deleted) to make ``what`` in a domain whose deletion is under way:
    nothing new may appear in it while its devices lose their trustpoints."""
    domain = session.get(Domain, domain_id)
    if domain is not None and domain.deletion_requested_at is not None:
        raise DomainBeingDeleted(domain, what=what)


def being_deleted(session: Session) -> frozenset[uuid.UUID]:
    """The domains whose deletion is under way (usually none): selections leave their devices out."""
    return frozenset(session.exec(select(Domain.id).where(Domain.deletion_requested_at.is_not(None))).all())


def create_domain(session: Session, *, name: str, parent_id: uuid.UUID | None,
                  auto_regenerate_keyring: bool | None = None) -> Domain:
    name = name.strip()
    if not name:
        raise ValidationError("a domain needs a name", code="invalid_name")
    parent = get_domain(session, domain_id=parent_id or GLOBAL_DOMAIN_ID)
    ensure_not_being_deleted(session, parent.id, what="a new child domain")
    if session.exec(select(Domain.id).where(Domain.parent_id == parent.id, Domain.name == name)).first():
        raise ConflictError(f"domain {parent.name} already has a child named {name!r}", code="duplicate_name")
    domain = Domain(name=name, parent_id=parent.id, auto_regenerate_keyring=auto_regenerate_keyring)
    session.add(domain)
    try:
        session.flush()
    except IntegrityError:  # created by a concurrent request since the check
        session.rollback()
        raise ConflictError(
            f"domain {parent.name} already has a child named {name!r}", code="duplicate_name"
        ) from None
    return domain


def set_keyring_policy(session: Session, *, domain_id: uuid.UUID, auto_regenerate_keyring: bool | None) -> Domain:
    """Set the domain's own keyring policy (None: follow the parent again); not committed."""
    domain = get_domain(session, domain_id=domain_id)
    domain.auto_regenerate_keyring = auto_regenerate_keyring
    session.add(domain)
    return domain
