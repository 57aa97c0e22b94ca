"""The domain tree: which domains a request made in one domain may see.

A domain sees devices and trustpoints of itself and its descendants (an enrollment in a
leaf domain is visible to its parent), and may use enrollment objects of itself and its
ancestors. An API token reaches its home domain and the domains below it: a request addressed
to any other domain is answered as if that domain did not exist. Pure: built from
(id, parent_id) pairs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from shared.errors import NotFoundError


@dataclass(frozen=True)
class DomainScope:
    """What a request addressed to ``domain_id`` may reach."""

    domain_id: uuid.UUID
    #: The domain and all its descendants.
    subtree: frozenset[uuid.UUID]
    #: The domain first, then its parent, up to the root.
    ancestors: tuple[uuid.UUID, ...]

    @property
    def is_root(self) -> bool:
        """The root sees everything: queries can skip the domain filter."""
        return len(self.ancestors) == 1

    def sees(self, domain_id: uuid.UUID) -> bool:
        return domain_id in self.subtree

    def may_use(self, domain_id: uuid.UUID) -> bool:
        return domain_id in self.ancestors


def build_scope(pairs: Iterable[tuple[uuid.UUID, uuid.UUID | None]], domain_id: uuid.UUID, *,
                within: uuid.UUID | None = None) -> DomainScope:
    """The scope of ``domain_id``; 404 when it does not exist or, with ``within`` (the caller's
    home domain), when it is not ``within`` or below it."""
    parent_of = dict(pairs)
    if domain_id not in parent_of:
        raise NotFoundError(f"domain {domain_id} not found")
    scope = _scope(parent_of, domain_id)
    if within is not None and within not in scope.ancestors:
        raise NotFoundError(f"domain {domain_id} not found")
    return scope


def _scope(parent_of: dict[uuid.UUID, uuid.UUID | None], domain_id: uuid.UUID) -> DomainScope:
    children: dict[uuid.UUID, list[uuid.UUID]] = {}
    for child, parent in parent_of.items():
        if parent is not None:
            children.setdefault(parent, []).append(child)
    subtree, todo = set(), [domain_id]
    while todo:
        current = todo.pop()
        if current not in subtree:  # a cycle in bad data must not loop forever
            subtree.add(current)
            todo.extend(children.get(current, ()))
    ancestors: list[uuid.UUID] = []
    current: uuid.UUID | None = domain_id
    while current is not None and current not in ancestors:
        ancestors.append(current)
        current = parent_of.get(current)
    return DomainScope(domain_id=domain_id, subtree=frozenset(subtree), ancestors=tuple(ancestors))
