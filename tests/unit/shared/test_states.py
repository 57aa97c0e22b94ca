"""The trustpoint state machine: which status changes are allowed, and what a change does to
the error and the timestamp."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import InvalidTransition
from shared.models import Trustpoint
from shared.states import Status, transition

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)

IN_PROGRESS, AVAILABLE, FAILED, PENDING, NOT_APPLICABLE, REVOKED = (
    Status.IN_PROGRESS, Status.AVAILABLE, Status.FAILED, Status.PENDING, Status.NOT_APPLICABLE, Status.REVOKED,
)

#: The table as the product describes it, written out independently of shared.states.
EXPECTED_ALLOWED = {
    IN_PROGRESS: {IN_PROGRESS, AVAILABLE, FAILED, PENDING, NOT_APPLICABLE},
    PENDING: {PENDING, IN_PROGRESS, AVAILABLE, FAILED},
    AVAILABLE: {AVAILABLE, IN_PROGRESS, FAILED, REVOKED},
    FAILED: {FAILED, IN_PROGRESS, AVAILABLE},
    NOT_APPLICABLE: {NOT_APPLICABLE, IN_PROGRESS},
    # The revocation scan marks an installed certificate revoked; re-enroll, or a refresh, moves on.
    REVOKED: {REVOKED, IN_PROGRESS, FAILED, AVAILABLE},
}
PAIRS = [(a, b) for a in Status for b in Status]
ALLOWED_PAIRS = [(a, b) for a, b in PAIRS if b in EXPECTED_ALLOWED[a]]
REFUSED_PAIRS = [(a, b) for a, b in PAIRS if b not in EXPECTED_ALLOWED[a]]
SIDES = {"ca": "ca_status", "identity": "identity_status"}
LABELS = {"ca": "CA certificate", "identity": "identity certificate"}
ERROR = {"error_code": "ca_unreachable", "error_message": "CA at https://[2001:db8::5]/ unreachable"}


def trustpoint(ca: Status = IN_PROGRESS, identity: Status = IN_PROGRESS) -> Trustpoint:
    tp = Trustpoint(
        device_id=uuid.uuid4(), domain_id=uuid.uuid4(), enrollment_object_id=uuid.uuid4(),
        name="tp-1", enrollment_type="est", ca_status=ca.value, identity_status=identity.value,
        status_changed_at=T0,
    )
    if FAILED in (ca, identity):
        tp.error_code, tp.error_message = "old_code", "the earlier failure"
    return tp


def snapshot(tp: Trustpoint) -> tuple:
    return (tp.ca_status, tp.identity_status, tp.error_code, tp.error_message, tp.status_changed_at)


def move(tp: Trustpoint, side: str, target: Status) -> bool:
    extra = ERROR if target in (FAILED, REVOKED) else {}
    return transition(tp, now=T1, **{side: target}, **extra)


def test_the_table_covers_every_pair():
    assert len(ALLOWED_PAIRS) + len(REFUSED_PAIRS) == 36
    assert len(REFUSED_PAIRS) == 14


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(("current", "target"), ALLOWED_PAIRS, ids=lambda s: s.value)
def test_allowed_transition_is_applied(side, current, target):
    tp = trustpoint(**{side: current})
    move(tp, side, target)
    assert getattr(tp, SIDES[side]) == target.value
    other = "identity_status" if side == "ca" else "ca_status"
    assert getattr(tp, other) == IN_PROGRESS.value


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(("current", "target"), REFUSED_PAIRS, ids=lambda s: s.value)
def test_refused_transition_raises_and_changes_nothing(side, current, target):
    tp = trustpoint(**{side: current})
    before = snapshot(tp)
    with pytest.raises(InvalidTransition) as info:
        move(tp, side, target)
    assert info.value.code == "invalid_transition"
    assert str(info.value) == f"{LABELS[side]} status cannot go from {current.value} to {target.value}"
    assert snapshot(tp) == before


def test_one_refused_side_blocks_the_other_side_too():
    tp = trustpoint(ca=NOT_APPLICABLE, identity=IN_PROGRESS)
    before = snapshot(tp)
    # identity in_progress -> available is fine, CA not_applicable -> available is not.
    with pytest.raises(InvalidTransition):
        transition(tp, now=T1, ca=AVAILABLE, identity=AVAILABLE)
    assert snapshot(tp) == before


@pytest.mark.parametrize(
    "error", [{}, {"error_code": "x"}, {"error_message": "y"}, {"error_code": "", "error_message": "y"}]
)
def test_failed_needs_code_and_message(error):
    tp = trustpoint()
    before = snapshot(tp)
    with pytest.raises(ValueError, match="error code and a message"):
        transition(tp, now=T1, identity=FAILED, **error)
    assert snapshot(tp) == before


def test_failure_records_code_message_and_time():
    tp = trustpoint()
    assert transition(tp, now=T1, identity=FAILED, **ERROR) is True
    assert (tp.identity_status, tp.error_code, tp.error_message) == ("failed", *ERROR.values())
    assert tp.status_changed_at == T1


@pytest.mark.parametrize("target", [IN_PROGRESS, AVAILABLE])
def test_leaving_failed_clears_the_error(target):
    tp = trustpoint(identity=FAILED)
    assert transition(tp, now=T1, identity=target) is True
    assert (tp.error_code, tp.error_message) == (None, None)


@pytest.mark.parametrize("target", [IN_PROGRESS, AVAILABLE, PENDING, NOT_APPLICABLE])
def test_other_statuses_clear_a_stale_error(target):
    tp = trustpoint()
    tp.error_code, tp.error_message = "stale", "left over from an earlier run"
    transition(tp, now=T1, identity=target)
    assert (tp.error_code, tp.error_message) == (None, None)


def test_error_of_a_side_still_failed_is_kept():
    # The CA certificate arrives while the identity certificate stays failed: the
    # operator must still see why the identity certificate failed.
    tp = trustpoint(ca=IN_PROGRESS, identity=FAILED)
    transition(tp, now=T1, ca=AVAILABLE)
    assert (tp.ca_status, tp.identity_status) == ("available", "failed")
    assert (tp.error_code, tp.error_message) == ("old_code", "the earlier failure")


def test_time_is_stamped_only_on_change():
    tp = trustpoint(identity=AVAILABLE)
    assert transition(tp, now=T1, identity=AVAILABLE) is False  # a redelivered message
    assert tp.status_changed_at == T0
    assert transition(tp, now=T1, identity=IN_PROGRESS) is True
    assert tp.status_changed_at == T1


def test_same_failure_twice_is_no_change_but_a_new_message_is():
    tp = trustpoint()
    transition(tp, now=T1, identity=FAILED, **ERROR)
    later = T1 + timedelta(minutes=1)
    assert transition(tp, now=later, identity=FAILED, **ERROR) is False
    assert tp.status_changed_at == T1
    assert transition(tp, now=later, identity=FAILED, error_code="timeout", error_message="timed out") is True
    assert (tp.error_code, tp.status_changed_at) == ("timeout", later)


def test_no_targets_on_a_clean_trustpoint_changes_nothing():
    tp = trustpoint()
    assert transition(tp, now=T1) is False
    assert tp.status_changed_at == T0


def test_status_values_may_be_given_as_strings():
    tp = trustpoint()
    assert transition(tp, now=T1, ca="available", identity="pending") is True
    assert (tp.ca_status, tp.identity_status) == ("available", "pending")


def test_revoked_needs_its_explanation_and_keeps_it_while_the_other_side_moves():
    tp = trustpoint(ca=AVAILABLE, identity=AVAILABLE)
    with pytest.raises(ValueError, match="error code and a message"):
        transition(tp, now=T1, identity=REVOKED)
    transition(tp, now=T1, identity=REVOKED, error_code="identity_revoked",
               error_message="revoked by the CA on 2030-01-01 (keyCompromise)")
    assert (tp.identity_status, tp.error_code) == ("revoked", "identity_revoked")
    transition(tp, now=T1, ca=AVAILABLE)
    assert tp.error_code == "identity_revoked"
    transition(tp, now=T1, identity=IN_PROGRESS)  # re-enroll
    assert (tp.error_code, tp.error_message) == (None, None)
