"""The scheduler's leader lease: one row per role, taken and renewed with conditional updates.

Whoever holds an unexpired lease leads. A controller takes an expired (or missing) lease with
an UPDATE that only matches while it is still expired, so two controllers cannot both win;
the token grows with every change of holder. The leader renews its lease every tick; if it
dies, the lease runs out and another controller takes it within one lease.

:func:`fence` re-checks the token inside the transaction that writes a run's results. On
PostgreSQL the UPDATE also locks the row until that transaction ends, so a new leader cannot
take over halfway through a write of the old one; a leader that stalled past its lease finds
its token gone and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from shared.models import LeaderLease

SCHEDULER = "scheduler"


@dataclass(frozen=True)
class Leadership:
    """A lease this process holds: its token proves it."""

    name: str
    holder: str
    token: int
    expires_at: datetime


class LeadershipLost(Exception):
    """The lease went to another holder: the write in progress must be dropped."""


def acquire(session: Session, *, name: str, holder: str, now: datetime, lease_seconds: float) -> Leadership | None:
    """Take or renew the lease (committed). None when another holder's lease is still running."""
    until = now + timedelta(seconds=lease_seconds)
    lease = session.get(LeaderLease, name, populate_existing=True)
    if lease is None:
        session.add(LeaderLease(name=name, holder=holder, token=1, expires_at=until))
        try:
            session.commit()
        except IntegrityError:  # another controller made the row first
            session.rollback()
            return None
        return Leadership(name=name, holder=holder, token=1, expires_at=until)
    if lease.holder == holder:
        condition = (LeaderLease.holder == holder) & (LeaderLease.token == lease.token)
        token = lease.token
    else:
        condition = (LeaderLease.token == lease.token) & (LeaderLease.expires_at < now)
        token = lease.token + 1
    result = session.execute(
        update(LeaderLease).where(LeaderLease.name == name, condition)
        .values(holder=holder, token=token, expires_at=until).execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:
        return None
    return Leadership(name=name, holder=holder, token=token, expires_at=until)


def fence(session: Session, leadership: Leadership, *, now: datetime, lease_seconds: float) -> None:
    """Raise LeadershipLost unless ``leadership`` still holds the lease (in the caller's
    transaction, which it locks the lease row for on PostgreSQL). A write that passes the fence
    proves the leader alive: the lease is extended with it, so a long run keeps its lease."""
    result = session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == leadership.name, LeaderLease.holder == leadership.holder,
               LeaderLease.token == leadership.token)
        .values(expires_at=now + timedelta(seconds=lease_seconds)).execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise LeadershipLost(f"the {leadership.name} lease went to another controller")


def release(session: Session, leadership: Leadership, *, now: datetime) -> None:
    """Give the lease up at a clean stop, so another controller takes over at once."""
    session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == leadership.name, LeaderLease.holder == leadership.holder,
               LeaderLease.token == leadership.token)
        .values(expires_at=now - timedelta(seconds=1)).execution_options(synchronize_session=False)
    )
    session.commit()
