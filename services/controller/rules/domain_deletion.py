"""Deleting a leaf domain: where a deletion stands, decided from what the domain still holds, and
what each refusal says. Pure: no I/O.

A deletion first removes every trustpoint of the domain's devices from the devices (delete jobs),
then, in one transaction, moves the devices to the target domain, removes the domain's enrollment
objects and the domain itself. Some things it cannot handle by itself; they block it, each with
what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: Names shown in a message before "and N more".
SHOWN = 5


class DeletionState(StrEnum):
    #: Delete jobs on the domain's devices are unfinished.
    REMOVING = "removing_trustpoints"
    #: Every job ended, but trustpoints remain: a delete job failed (the device was unreachable…).
    FAILED = "failed"
    #: Something the deletion cannot remove by itself is in the way.
    BLOCKED = "blocked"
    #: Nothing is left: the controller completes the deletion at its next pass.
    COMPLETING = "completing"
    #: Done (only in the answer of the request that completed it: the domain is gone).
    COMPLETED = "completed"


def listed(names: tuple[str, ...] | list[str], total: int | None = None) -> str:
    total = len(names) if total is None else total
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {total - SHOWN} more" if total > SHOWN else "")


@dataclass(frozen=True)
class Holdings:
    """What a domain still holds, as far as its deletion is concerned."""

    #: Names of its child domains.
    children: tuple[str, ...] = ()
    #: Its webhooks, as "name (url)".
    webhooks: tuple[str, ...] = ()
    #: Trustpoints of devices outside the domain that use one of its enrollment objects, as
    #: "trustpoint T of device D (object O)", and how many there are in all.
    used_outside: tuple[str, ...] = ()
    used_outside_total: int = 0
    #: Jobs not finished on its devices.
    unfinished_jobs: int = 0
    #: Trustpoints still recorded on its devices.
    trustpoints: int = 0
    devices: int = 0

    def blockers(self, domain: str) -> list[tuple[str, str]]:
        """Each thing in the way, as (stable code, what it is and what to do about it)."""
        found = []
        if self.children:
            found.append(("domain_not_leaf", f"domain {domain} has {len(self.children)} child domain(s) "
                          f"({listed(self.children)}): only a leaf domain can be deleted; delete its children first"))
        if self.webhooks:
            found.append(("domain_has_webhooks", f"domain {domain} has {len(self.webhooks)} webhook(s) "
                          f"({listed(self.webhooks)}), whose receivers would stop getting the alerts they forward: "
                          "delete them first (and add them to the domain the devices go to, if still wanted)"))
        if self.used_outside_total:
            found.append(("enrollment_object_in_use", f"{self.used_outside_total} trustpoint(s) of devices outside "
                          f"domain {domain} use its enrollment objects "
                          f"({listed(self.used_outside, self.used_outside_total)}), which go with the domain: delete "
                          "those trustpoints, or move their devices back into the domain, first"))
        return found


def state_of(holdings: Holdings, *, domain: str, force: bool = False) -> DeletionState:
    """Where a deletion stands. ``force``: trustpoints left behind are forgotten, not waited for."""
    if holdings.blockers(domain):
        return DeletionState.BLOCKED
    if holdings.unfinished_jobs:
        return DeletionState.REMOVING
    if holdings.trustpoints and not force:
        return DeletionState.FAILED
    return DeletionState.COMPLETING


def detail(holdings: Holdings, state: DeletionState, *, domain: str, target: str) -> str:
    """The state in words, with what happens next or what to do."""
    if state is DeletionState.BLOCKED:
        return "; ".join(message for _, message in holdings.blockers(domain))
    if state is DeletionState.REMOVING:
        return (f"removing the trustpoints of domain {domain}'s devices from the devices: {holdings.unfinished_jobs} "
                f"job(s) unfinished, {holdings.trustpoints} trustpoint(s) left")
    if state is DeletionState.FAILED:
        return (f"{holdings.trustpoints} trustpoint(s) could not be removed from the devices (see the failures): "
                "fix the cause (e.g. bring the device back online) and DELETE the domain again to retry; or DELETE "
                "with force=true to forget them, leaving them on the devices; or delete the device itself")
    if state is DeletionState.COMPLETING:
        return (f"every trustpoint is removed: the controller moves the {holdings.devices} device(s) to domain "
                f"{target} and deletes domain {domain} at its next pass (or DELETE it again to do it now)")
    return f"domain {domain} is deleted; its {holdings.devices} device(s) are in domain {target}"
