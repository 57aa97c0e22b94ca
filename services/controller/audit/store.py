"""The audit log in the database: writing an entry without ever failing the request or command
that made it, a domain's entries for the API (its subtree's, filtered, newest first), and the
retention pass."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from services.controller.rules.scope import DomainScope
from shared.logging import get_logger
from shared.models import AuditEntry, Domain

log = get_logger(__name__)

#: Entries deleted per transaction by the retention pass: short transactions, whatever the backlog.
PRUNE_BATCH = 10_000


def record(engine: Engine, make: Callable[[Session], AuditEntry]) -> bool:
    """Write the entry ``make(session)`` builds, in a transaction of its own. A database that
    refuses it is logged (with the action, never more) and the caller goes on: the audit log must
    not turn an answered request into a failed one."""
    action = "?"
    try:
        with Session(engine) as session:
            entry = make(session)
            action = entry.action
            session.add(entry)
            session.commit()
        return True
    except Exception as exc:  # any failure of the write, whatever the driver raises
        log.error("audit entry not written", action=action, error=f"{type(exc).__name__}: {exc}"[:300])
        return False


def domain_parents(session: Session) -> dict[uuid.UUID, uuid.UUID | None]:
    """Each domain's parent (domains are few: one small query)."""
    return {row[0]: row[1] for row in session.execute(select(Domain.id, Domain.parent_id)).all()}


@dataclass(frozen=True)
class AuditFilters:
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    token_id: uuid.UUID | None = None
    #: "ok" or "failed".
    outcome: str | None = None
    device_id: uuid.UUID | None = None
    #: An id the entry names: its target's, or its device's.
    target_id: uuid.UUID | None = None

    def conditions(self) -> list:
        found = []
        if self.since is not None:
            found.append(AuditEntry.at >= self.since)
        if self.until is not None:
            found.append(AuditEntry.at < self.until)
        if self.action is not None:
            found.append(AuditEntry.action == self.action)
        if self.token_id is not None:
            found.append(AuditEntry.token_id == self.token_id)
        if self.outcome is not None:
            found.append(AuditEntry.outcome == self.outcome)
        if self.device_id is not None:
            found.append(AuditEntry.device_id == self.device_id)
        if self.target_id is not None:
            found.append(or_(AuditEntry.target_id == self.target_id, AuditEntry.device_id == self.target_id))
        return found


def list_entries(session: Session, *, scope: DomainScope, filters: AuditFilters, offset: int,
                 limit: int) -> tuple[list[AuditEntry], int]:
    """A page of the entries filed in the domain's subtree, newest first, and how many match."""
    conditions = ([] if scope.is_root else [AuditEntry.domain_id.in_(scope.subtree)]) + filters.conditions()
    total = session.exec(select(func.count()).select_from(AuditEntry).where(*conditions)).one()
    rows = session.exec(select(AuditEntry).where(*conditions)
                        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).offset(offset).limit(limit)).all()
    return list(rows), total


def prune(session: Session, *, before: datetime, fence: Callable[[Session], None] = lambda _session: None,
          batch: int = PRUNE_BATCH) -> int:
    """Delete the entries older than ``before``, ``batch`` per transaction (each fenced and
    committed); returns how many went."""
    pruned = 0
    while True:
        oldest = select(AuditEntry.id).where(AuditEntry.at < before).order_by(AuditEntry.at).limit(batch)
        gone = session.execute(delete(AuditEntry).where(AuditEntry.id.in_(oldest))
                               .execution_options(synchronize_session=False)).rowcount
        fence(session)
        session.commit()
        pruned += gone
        if gone < batch:
            return pruned
