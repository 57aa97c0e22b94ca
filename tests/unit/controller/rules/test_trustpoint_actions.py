"""The table of trustpoint actions: each names its job, unknown names are refused with their own
code, and a destructive one waits for confirmation."""

from __future__ import annotations

import pytest

from services.controller.rules.trustpoint_actions import ACTIONS, action_named, action_of, check_confirmed
from shared.enums import JobKind
from shared.errors import ConflictError, ValidationError
from shared.states import Status, can_move


def test_each_action_is_carried_out_by_its_job():
    assert {name: action.kind for name, action in ACTIONS.items()} == {
        "re_enroll": JobKind.RE_ENROLL, "refresh": JobKind.REFRESH, "delete": JobKind.DELETE}
    assert all(action_of(action.kind) is action for action in ACTIONS.values())


def test_an_unknown_action_names_the_known_ones():
    with pytest.raises(ValidationError) as refused:
        action_named("regenerate_keyring")
    assert refused.value.code == "unknown_action" and refused.value.status == 422
    assert "'regenerate_keyring'" in refused.value.message and "re_enroll, refresh, delete" in refused.value.message


def test_statuses_restart_from_anywhere():
    # A bulk action moves every selected trustpoint to in_progress in one UPDATE: the state
    # machine must allow it whatever the trustpoint's statuses are.
    restarting = [a for a in ACTIONS.values() if a.restarts_statuses]
    assert {a.name for a in restarting} == {"re_enroll", "refresh"}
    assert all(can_move(status, Status.IN_PROGRESS) for status in Status)


def test_delete_waits_for_confirmation_and_says_how_many():
    delete = action_named("delete")
    with pytest.raises(ConflictError) as refused:
        check_confirmed(delete, confirm=False, name="vpn", count=12)
    assert refused.value.code == "delete_confirmation_required" and refused.value.status == 409
    assert "trustpoint vpn" in refused.value.message and "from 12 devices" in refused.value.message
    assert '"confirm": true' in refused.value.message and refused.value.extensions == {"selected": 12}
    check_confirmed(delete, confirm=True, name="vpn", count=12)
    check_confirmed(action_named("refresh"), confirm=False, name="vpn", count=12)
