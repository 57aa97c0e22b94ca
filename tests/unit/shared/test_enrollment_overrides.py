"""The rules of child-domain overrides, as pure functions: which override applies on a path up the
domain tree, how its values merge with the object's, and which secret may go where."""

from __future__ import annotations

import uuid

import pytest

from services.worker.parameters import trustpoint_configuration
from shared.enrollment_overrides import (
    OVERRIDABLE_FIELDS,
    complete,
    effective_object,
    field_values,
    merge,
    nearest,
    overridden_fields,
    path_up,
    uses_object_secret,
)
from shared.models import GLOBAL_DOMAIN_ID, Device, EnrollmentObject, EnrollmentObjectFields, EnrollmentOverride
from shared.secrets import SecretBox

BOX = SecretBox("override-unit-test-key")
A, A1, A11, B = (uuid.uuid4() for _ in range(4))
#: Global > A > A1 > A11, and Global > B.
PARENTS = {GLOBAL_DOMAIN_ID: None, A: GLOBAL_DOMAIN_ID, A1: A, A11: A1, B: GLOBAL_DOMAIN_ID}
EST_URL, OTHER_URL = "https://ca.example.com/", "https://ca.branch.example.net:8443/"


def est_object(**fields) -> EnrollmentObject:
    defaults = dict(id=uuid.uuid4(), domain_id=GLOBAL_DOMAIN_ID, name="vpn", enrollment_type="est",
                    enrollment_url=EST_URL, username="fw", fingerprint="ab" * 32, key_type="ecdsa", key_size=256,
                    secret_blob=BOX.seal(b"global-password"), allow_overrides=True, ca_concurrency_limit=500,
                    ca_rate_limit=900.0, ignore_server_validation=True, common_name="vpn.example.com")
    return EnrollmentObject(**{**defaults, **fields})


def override(domain_id: uuid.UUID, secret: bytes | None = None, **values) -> EnrollmentOverride:
    return EnrollmentOverride(enrollment_object_id=uuid.uuid4(), domain_id=domain_id, values=values,
                              secret_blob=BOX.seal(secret) if secret else None)


def sent(obj: EnrollmentObject) -> dict:
    """The options a device is configured with, secrets opened."""
    device = Device(domain_id=A1, name="fw-1", serial="FTD-1", management_url="http://127.0.0.1:1/api")
    return trustpoint_configuration(obj, device, name="vpn", secrets=BOX).options


# --- which override applies ------------------------------------------------------------------------

def test_the_nearest_override_between_the_trustpoints_domain_and_the_objects_wins():
    by_domain = {A: "A's", A1: "A1's"}
    assert path_up(PARENTS, A11) == [A11, A1, A, GLOBAL_DOMAIN_ID]
    assert nearest(path_up(PARENTS, A11), GLOBAL_DOMAIN_ID, by_domain) == "A1's"  # from below, the nearest
    assert nearest(path_up(PARENTS, A1), GLOBAL_DOMAIN_ID, by_domain) == "A1's"
    assert nearest(path_up(PARENTS, A), GLOBAL_DOMAIN_ID, by_domain) == "A's"
    assert nearest(path_up(PARENTS, B), GLOBAL_DOMAIN_ID, by_domain) is None  # a sibling's overrides: not B's
    assert nearest(path_up(PARENTS, GLOBAL_DOMAIN_ID), GLOBAL_DOMAIN_ID, by_domain) is None  # the object's own
    # An object of A: an override in A itself (or above) never applies, A1's does.
    assert nearest(path_up(PARENTS, A11), A, {A: "A's", GLOBAL_DOMAIN_ID: "Global's"}) is None
    assert nearest(path_up(PARENTS, A11), A, {A1: "A1's"}) == "A1's"
    # An object B cannot use: no override of it applies in A's subtree.
    assert nearest(path_up(PARENTS, A1), B, {A1: "A1's"}) is None


def test_a_cycle_in_the_domain_tree_ends_the_walk():
    looped = {A: A1, A1: A}
    assert path_up(looped, A) == [A, A1]


# --- merging ---------------------------------------------------------------------------------------

def test_only_the_documented_fields_may_be_overridden():
    assert set(OVERRIDABLE_FIELDS) <= set(EnrollmentObjectFields.model_fields)
    for never in ("name", "enrollment_type", "ignore_server_validation", "ca_concurrency_limit", "ca_rate_limit",
                  "allow_overrides", "auto_renew"):
        assert never not in OVERRIDABLE_FIELDS
        with pytest.raises(ValueError, match=f"not overridable: {never}"):
            complete({never: True})


def test_the_renewal_window_is_overridden_whole():
    base = {"validity_days": 365, "renew_before_fraction": 0.25, "renew_before_days": None}
    merged = merge(base, {"renew_before_days": 20})
    assert (merged["renew_before_fraction"], merged["renew_before_days"]) == (None, 20)
    assert overridden_fields(complete({"renew_before_days": 20})) == ["renew_before_fraction", "renew_before_days"]
    assert merge(base, {"validity_days": 90})["renew_before_fraction"] == 0.25  # untouched when not overridden


def test_another_ca_does_not_inherit_the_admins_decisions_about_the_objects_ca():
    obj = est_object()
    same_ca = effective_object(obj, override(A1, common_name="branch.example.com"))
    assert (same_ca.ignore_server_validation, same_ca.ca_concurrency_limit, same_ca.ca_rate_limit) == (True, 500, 900.0)
    other_ca = effective_object(obj, override(A1, enrollment_url=OTHER_URL, username="branch"))
    assert (other_ca.enrollment_url, other_ca.username, other_ca.common_name) == (OTHER_URL, "branch",
                                                                                   "vpn.example.com")
    assert (other_ca.ignore_server_validation, other_ca.ca_concurrency_limit, other_ca.ca_rate_limit) == (
        False, None, None)
    # The stored object is left as it was, and so are its id and name (the trustpoint's).
    assert (obj.enrollment_url, obj.ignore_server_validation) == (EST_URL, True)
    assert (other_ca.id, other_ca.name, other_ca.domain_id) == (obj.id, obj.name, obj.domain_id)


def test_no_override_is_the_object_itself():
    obj = est_object()
    assert effective_object(obj, None) is obj


# --- secrets -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("moved", [
    {"enrollment_url": OTHER_URL}, {"fingerprint": "cd" * 32}, {"username": "someone-else"},
])
def test_the_objects_secret_never_goes_to_a_ca_trust_or_user_it_was_not_given_for(moved):
    """The attack: a descendant domain points the object at its own CA (or trusts another server,
    or names another user) without a password of its own, hoping to receive the object's."""
    obj = est_object()
    assert not uses_object_secret(field_values(obj), moved)
    effective = effective_object(obj, override(A1, **moved))
    assert effective.secret_blob is None and "password" not in sent(effective)
    # With its own password, that one goes, and only that one.
    own = effective_object(obj, override(A1, secret=b"branch-password", **moved))
    assert sent(own)["password"] == "branch-password"


def test_an_override_that_keeps_the_ca_uses_the_objects_secret_unless_it_has_its_own():
    obj = est_object()
    keeps = {"common_name": "branch.example.com", "enrollment_url": EST_URL}  # the same URL, sent again
    assert uses_object_secret(field_values(obj), keeps)
    assert sent(effective_object(obj, override(A1, **keeps)))["password"] == "global-password"
    assert sent(effective_object(obj, override(A1, secret=b"own", **keeps)))["password"] == "own"
