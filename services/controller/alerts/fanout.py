"""Which webhooks an alert event goes to: those of the event's domain and of every domain above
it (a domain's webhook sees its whole subtree, as its API does), whose code and severity filters
let the event through. Pure: built from the domains' (id, parent) pairs and the webhooks' rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Subscriber:
    """A webhook as the fan-out sees it; empty filters let everything through."""

    webhook_id: uuid.UUID
    domain_id: uuid.UUID
    codes: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()

    def wants(self, *, code: str, severity: str) -> bool:
        return (not self.codes or code in self.codes) and (not self.severities or severity in self.severities)


class DomainTree:
    """For each domain, the domains whose subtree holds it: itself and its ancestors."""

    def __init__(self, pairs: Iterable[tuple[uuid.UUID, uuid.UUID | None]]) -> None:
        self._parent_of = dict(pairs)
        self._roots = frozenset(d for d, parent in self._parent_of.items() if parent is None)
        self._reach: dict[uuid.UUID, frozenset[uuid.UUID]] = {}

    def holders(self, domain_id: uuid.UUID) -> frozenset[uuid.UUID]:
        """``domain_id`` and its ancestors. A domain that no longer exists is held by the root
        alone: the root sees everything, also an alert that outlived its domain."""
        found = self._reach.get(domain_id)
        if found is None:
            if domain_id not in self._parent_of:
                found = frozenset({domain_id, *self._roots})
            else:
                chain: list[uuid.UUID] = []
                current: uuid.UUID | None = domain_id
                while current is not None and current not in chain:  # a cycle in bad data must not loop
                    chain.append(current)
                    current = self._parent_of.get(current)
                found = frozenset(chain)
            self._reach[domain_id] = found
        return found


def recipients(subscribers: Iterable[Subscriber], tree: DomainTree, *, domain_id: uuid.UUID, code: str,
               severity: str) -> list[uuid.UUID]:
    """The webhooks (ids) that get an event of ``code`` and ``severity`` in ``domain_id``."""
    holders = tree.holders(domain_id)
    return [s.webhook_id for s in subscribers if s.domain_id in holders and s.wants(code=code, severity=severity)]
