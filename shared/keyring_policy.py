"""Which domains regenerate invalid default keyrings on their own (``Domain.auto_regenerate_keyring``).

A domain's own setting applies; a domain that has none (None) follows its parent, up to Global,
where none means off. The workers apply the policy when a health check finds an invalid keyring;
the domain API shows the effective value and the domain it comes from.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import Session, select

from shared.models import Domain


@dataclass(frozen=True)
class KeyringPolicy:
    enabled: bool
    #: The domain whose setting applies, and its name; None when no domain up the tree set one (off).
    source_id: uuid.UUID | None = None
    source_name: str = ""


OFF = KeyringPolicy(enabled=False)


def effective_policies(
    domains: Iterable[tuple[uuid.UUID, uuid.UUID | None, str, bool | None]],
) -> dict[uuid.UUID, KeyringPolicy]:
    """The policy in force in every domain, from (id, parent id, name, own setting) rows."""
    rows = {domain_id: (parent_id, name, setting) for domain_id, parent_id, name, setting in domains}
    found: dict[uuid.UUID, KeyringPolicy] = {}

    def policy_of(domain_id: uuid.UUID) -> KeyringPolicy:
        path: list[uuid.UUID] = []
        current: uuid.UUID | None = domain_id
        policy = OFF
        # Up the tree until a domain that set it, one already known, or the root (a cycle in bad data stops too).
        while current is not None and current in rows and current not in path:
            if current in found:
                policy = found[current]
                break
            parent_id, name, setting = rows[current]
            path.append(current)
            if setting is not None:
                policy = KeyringPolicy(enabled=setting, source_id=current, source_name=name)
                break
            current = parent_id
        for domain in path:
            found[domain] = policy
        return policy

    for domain_id in rows:
        policy_of(domain_id)
    return found


def load_policies(session: Session) -> dict[uuid.UUID, KeyringPolicy]:
    """Every domain's policy: domains are few, one small query."""
    rows = session.exec(select(Domain.id, Domain.parent_id, Domain.name, Domain.auto_regenerate_keyring)).all()
    return effective_policies((row[0], row[1], row[2], row[3]) for row in rows)
