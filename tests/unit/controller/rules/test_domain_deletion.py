"""Where a leaf domain's deletion stands, from what the domain still holds, and what each state
and refusal tells the operator to do."""

from __future__ import annotations

import pytest

from services.controller.rules.domain_deletion import DeletionState, Holdings, detail, listed, state_of

IN_THE_WAY = Holdings(webhooks=("pager (https://hooks.example.com/a)",), trustpoints=2, devices=1)


@pytest.mark.parametrize(("holdings", "force", "state"), [
    (Holdings(unfinished_jobs=3, trustpoints=3, devices=2), False, DeletionState.REMOVING),
    (Holdings(unfinished_jobs=1, trustpoints=1, devices=2), True, DeletionState.REMOVING),  # force waits for jobs
    (Holdings(trustpoints=1, devices=2), False, DeletionState.FAILED),
    (Holdings(trustpoints=1, devices=2), True, DeletionState.COMPLETING),
    (Holdings(devices=2), False, DeletionState.COMPLETING),
    (Holdings(), False, DeletionState.COMPLETING),
    (IN_THE_WAY, True, DeletionState.BLOCKED),
    (Holdings(children=("Floor-2",)), False, DeletionState.BLOCKED),
    (Holdings(used_outside=("trustpoint vpn of device fw-1 (object vpn)",), used_outside_total=1), False,
     DeletionState.BLOCKED),
])
def test_the_state_follows_what_is_left(holdings, force, state):
    assert state_of(holdings, domain="Lab", force=force) is state


def test_each_blocker_has_its_code_and_says_what_to_do():
    held = Holdings(children=("Floor-1", "Floor-2"), webhooks=("pager (https://hooks.example.com/a)",),
                    used_outside=tuple(f"trustpoint vpn of device fw-{n} (object vpn)" for n in range(5)),
                    used_outside_total=7)
    blockers = dict(held.blockers("Lab"))
    assert list(blockers) == ["domain_not_leaf", "domain_has_webhooks", "enrollment_object_in_use"]
    assert blockers["domain_not_leaf"] == ("domain Lab has 2 child domain(s) (Floor-1, Floor-2): only a leaf domain "
                                           "can be deleted; delete its children first")
    assert "delete them first" in blockers["domain_has_webhooks"]
    assert "(trustpoint vpn of device fw-0 (object vpn), " in blockers["enrollment_object_in_use"]
    assert "fw-4 (object vpn) and 2 more)" in blockers["enrollment_object_in_use"]
    assert blockers["enrollment_object_in_use"].endswith("or move their devices back into the domain, first")


def test_the_detail_says_what_happens_next_or_what_to_do():
    failed = Holdings(trustpoints=1, devices=2)
    text = detail(failed, DeletionState.FAILED, domain="Lab", target="Global")
    assert text.startswith("1 trustpoint(s) could not be removed from the devices")
    assert "DELETE the domain again to retry" in text and "force=true" in text
    ready = detail(Holdings(devices=2), DeletionState.COMPLETING, domain="Lab", target="EMEA")
    assert "moves the 2 device(s) to domain EMEA and deletes domain Lab at its next pass" in ready
    assert detail(IN_THE_WAY, DeletionState.BLOCKED, domain="Lab", target="EMEA").startswith(
        "domain Lab has 1 webhook(s)")


def test_a_long_list_is_cut_short():
    assert listed(("a", "b")) == "a, b"
    assert listed(tuple("abcdefg")) == "a, b, c, d, e and 2 more"
