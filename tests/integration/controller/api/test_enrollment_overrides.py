"""Child-domain overrides of enrollment objects through the API: a descendant domain sets its own
values (a CA URL and password, a subject) for an ancestor's object that allows it; reading the
object or a trustpoint there shows the values deployed and where they came from; secrets stay
write-only and never go to a CA they were not given for; the object's own changes cannot leave an
override behind that does not fit."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import Session, select

from services.controller.ca_bundles.checks import servers_to_check
from services.controller.revocation.scan import scan_settings
from services.worker.parameters import trustpoint_configuration
from shared.models import Device, Domain, EnrollmentObject, EnrollmentOverride
from shared.override_lookup import OverrideIndex, applied_in
from shared.secret_rotation import rotate_secrets
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.support.api import GLOBAL, SECRET_KEY, problem

GLOBAL_CA, BRANCH_CA = "https://ca.example.com/.well-known/est/", "https://[2001:db8::5]:8443/.well-known/est/"
EST = {"name": "vpn-est", "enrollment_type": "est", "enrollment_url": GLOBAL_CA, "username": "fw",
       "password": "Global-Secret-1", "key_type": "ecdsa", "key_size": 256, "common_name": "vpn.example.com",
       "allow_overrides": True}
BRANCH = {"enrollment_url": BRANCH_CA, "username": "branch-fw", "password": "Branch-Secret-2",
          "common_name": "vpn.branch.example.com"}


def objects(domain: str) -> str:
    return f"/domains/{domain}/enrollment-objects"


def override_path(domain: str, object_id: str) -> str:
    return f"{objects(domain)}/{object_id}/override"


@pytest.fixture
def tree(api):
    """Global > A > A1 > A11, Global > B; an EST object of Global that allows overrides; a network
    admin homed at A1."""
    a = api.domain("A")
    a1 = api.domain("A1", parent=a)
    ids = {"A": a, "A1": a1, "A11": api.domain("A11", parent=a1), "B": api.domain("B")}
    ids["object"] = api.enrollment_object(**EST)["id"]
    ids["a1_admin"] = api.ok("POST", "/tokens", {"name": "A1 net", "role": "network_admin", "domain_id": a1},
                             status=201)["token"]
    return ids


def as_token(api, token: str, method: str, path: str, body: dict | None = None):
    return api.client.request(method, f"/api/v1{path}", json=body, headers={"Authorization": f"Bearer {token}"})


def sent_to_device(api, object_id: str, domain: str) -> dict:
    """The options a trustpoint in ``domain`` would be configured with, secrets opened, as the worker builds them."""
    with Session(api.engine) as session:
        obj = session.get(EnrollmentObject, uuid.UUID(object_id))
        applied = applied_in(session, obj, uuid.UUID(domain))
    device = Device(domain_id=uuid.UUID(domain), name="fw", serial="S", management_url="http://127.0.0.1:1/api")
    return trustpoint_configuration(applied.obj, device, name="vpn-est", secrets=SecretBox(SECRET_KEY)).options


def override_rows(api) -> list[EnrollmentOverride]:
    with Session(api.engine) as session:
        return list(session.exec(select(EnrollmentOverride)).all())


# --- setting and reading ----------------------------------------------------------------------------

def test_a_child_domain_overrides_the_ca_and_its_trustpoints_show_and_get_the_overridden_values(api, tree):
    a1, obj = tree["A1"], tree["object"]
    made = as_token(api, tree["a1_admin"], "PUT", override_path(a1, obj), {**BRANCH, "fingerprint": "AB:" * 31 + "AB"})
    assert made.status_code == 200, made.text
    assert "Branch-Secret-2" not in made.text and "Global-Secret-1" not in made.text
    shown = made.json()
    assert shown["values"] == {"enrollment_url": BRANCH_CA, "username": "branch-fw", "fingerprint": "ab" * 32,
                               "common_name": "vpn.branch.example.com"}  # normalised as the object's are
    assert (shown["has_secret"], shown["uses_object_secret"], shown["domain_id"]) == (True, False, a1)
    assert api.ok("GET", override_path(a1, obj)) == shown

    # The object read from A1 (and from A11 below it) shows what that domain deploys, and where it came from.
    for domain in (a1, tree["A11"]):
        seen = api.ok("GET", f"{objects(domain)}/{obj}")
        assert (seen["enrollment_url"], seen["username"], seen["common_name"]) == (
            BRANCH_CA, "branch-fw", "vpn.branch.example.com")
        assert seen["overridden_fields"] == ["enrollment_url", "username", "fingerprint", "common_name"]
        assert seen["override_domain_id"] == a1 and seen["has_secret"] is True
        listed = {o["id"]: o for o in api.ok("GET", objects(domain))["items"]}
        assert listed[obj]["enrollment_url"] == BRANCH_CA and listed[obj]["override_domain_id"] == a1
    # Global, A and the sibling B are untouched.
    for domain in (GLOBAL, tree["A"], tree["B"]):
        seen = api.ok("GET", f"{objects(domain)}/{obj}")
        assert (seen["enrollment_url"], seen["overridden_fields"], seen["override_domain_id"]) == (GLOBAL_CA, [], None)

    # What each domain's trustpoints are configured with.
    assert sent_to_device(api, obj, a1)["password"] == "Branch-Secret-2"
    assert sent_to_device(api, obj, a1)["enrollment_url"] == BRANCH_CA
    assert sent_to_device(api, obj, tree["A"])["password"] == "Global-Secret-1"

    # A trustpoint's view names the overridden fields and the override's domain.
    in_a1 = api.device("FTD-A1", domain=a1)
    added = api.add(in_a1["id"], obj, domain=GLOBAL)  # enrolled from the parent: the child's override still applies
    assert added["trustpoint"]["override_domain_id"] == a1
    view = api.ok("GET", f"/domains/{a1}/devices/{in_a1['id']}/trustpoints/vpn-est")
    assert view["overridden_fields"] == ["enrollment_url", "username", "fingerprint", "common_name"]
    assert view["override_domain_id"] == a1
    in_a = api.device("FTD-A", domain=tree["A"])
    api.add(in_a["id"], obj, domain=tree["A"])
    plain = api.ok("GET", f"/domains/{tree['A']}/devices/{in_a['id']}/trustpoints/vpn-est")
    assert (plain["overridden_fields"], plain["override_domain_id"]) == ([], None)


def test_the_nearest_override_wins_as_a_whole(api, tree):
    obj = tree["object"]
    api.ok("PUT", override_path(tree["A"], obj), {"common_name": "a.example.com", "validity_days": 90})
    api.ok("PUT", override_path(tree["A1"], obj), {"organization": "Branch One"})
    in_a11 = api.ok("GET", f"{objects(tree['A11'])}/{obj}")
    assert (in_a11["override_domain_id"], in_a11["overridden_fields"]) == (tree["A1"], ["organization"])
    # A1's override replaces A's: A's values do not stack under it.
    assert (in_a11["organization"], in_a11["common_name"], in_a11["validity_days"]) == (
        "Branch One", "vpn.example.com", 365)
    assert api.ok("GET", f"{objects(tree['A'])}/{obj}")["common_name"] == "a.example.com"

    # Clearing A1's brings A's back below it; clearing what is not there changes nothing.
    assert api.call("DELETE", override_path(tree["A1"], obj)).status_code == 204
    assert api.call("DELETE", override_path(tree["A1"], obj)).status_code == 204
    assert api.ok("GET", f"{objects(tree['A11'])}/{obj}")["override_domain_id"] == tree["A"]
    assert api.ok("GET", override_path(tree["A1"], obj))["values"] == {}


def test_a_put_replaces_the_override_and_a_renewal_window_is_replaced_whole(api, tree):
    obj, a1 = tree["object"], tree["A1"]
    api.ok("PUT", override_path(a1, obj), {"common_name": "one.example.com", "renew_before_days": 30})
    again = api.ok("PUT", override_path(a1, obj), {"renew_before_fraction": 0.5})
    assert again["values"] == {"renew_before_fraction": 0.5, "renew_before_days": None}
    seen = api.ok("GET", f"{objects(a1)}/{obj}")
    assert (seen["common_name"], seen["renew_before_fraction"], seen["renew_before_days"]) == (
        "vpn.example.com", 0.5, None)


# --- who may, where ---------------------------------------------------------------------------------

def test_overrides_are_refused_where_the_object_does_not_allow_them_or_in_its_own_domain(api, tree):
    closed = api.enrollment_object("closed", enrollment_type="self_signed")
    refused = problem(api.call("PUT", override_path(tree["A1"], closed["id"]), json={"common_name": "x"}),
                      409, "overrides_not_allowed")
    assert "allow_overrides" in refused["detail"]
    own = problem(api.call("PUT", override_path(GLOBAL, tree["object"]), json={"common_name": "x"}),
                  409, "override_in_own_domain")
    assert f"PUT /api/v1/domains/{GLOBAL}/enrollment-objects/{tree['object']}" in own["detail"]
    problem(api.call("GET", override_path(GLOBAL, tree["object"])), 409, "override_in_own_domain")
    assert override_rows(api) == []


def test_an_override_reaches_only_objects_and_domains_in_the_callers_reach(api, tree):
    """The attacks: override a sibling's object, override in a domain outside the token's subtree,
    override with a role that only reads."""
    b_object = api.enrollment_object("b-only", domain=tree["B"], enrollment_type="self_signed",
                                     allow_overrides=True)
    problem(api.call("PUT", override_path(tree["A1"], b_object["id"]), json={"common_name": "x"}), 404, "not_found")
    for domain in (tree["B"], tree["A"], GLOBAL):  # above or beside the A1 token's home
        refused = as_token(api, tree["a1_admin"], "PUT", override_path(domain, tree["object"]), {"common_name": "x"})
        assert refused.status_code == 404, refused.text
        assert as_token(api, tree["a1_admin"], "GET", override_path(domain, tree["object"])).status_code == 404
    problem(api.call("PUT", override_path(tree["A1"], tree["object"]), json={"common_name": "x"}, role="read_only"),
            403, "forbidden")
    problem(api.call("DELETE", override_path(tree["A1"], tree["object"]), role="read_only"), 403, "forbidden")
    problem(api.call("PUT", override_path(tree["A1"], str(uuid.uuid4())), json={"common_name": "x"}), 404,
            "not_found")
    assert override_rows(api) == []


REFUSED = [
    ({"name": "renamed"}, 422, "validation_error"),  # not overridable
    ({"enrollment_type": "scep"}, 422, "validation_error"),
    ({"ignore_server_validation": True}, 422, "validation_error"),  # an admin's trust setting
    ({"ca_concurrency_limit": 10_000}, 422, "validation_error"),  # the CA's fairness limits
    ({"enrollment_url": None}, 422, "validation_error"),  # null: only the renewal window takes it
    ({"country": "USA"}, 422, "validation_error"),  # the object's own limits
    ({"crl_urls": [f"http://crl.example.com/{n}.crl" for n in range(17)]}, 422, "validation_error"),
    ({"enrollment_url": "http://ca.example.com/"}, 422, "est_url_not_https"),
    ({"enrollment_url": "https://fw:secret@ca.example.com/"}, 422, "url_credentials_not_allowed"),
    ({"key_type": "rsa"}, 422, "invalid_key_size"),  # the object's 256 is no RSA size
    ({"validity_days": 30, "renew_before_days": 30}, 422, "renew_before_too_long"),
    ({"crl_urls": ["https://crl.example.com/x.crl"]}, 422, "revocation_url_not_http"),
    ({"challenge_password": "scep-only"}, 422, "field_not_applicable"),
    ({}, 422, "override_empty"),
]


def test_override_values_are_checked_as_the_objects_own_and_nothing_is_stored_when_refused(api, tree):
    for body, status, code in REFUSED:
        problem(api.call("PUT", override_path(tree["A1"], tree["object"]), json=body), status, code)
    assert override_rows(api) == []


def test_override_fields_are_documented_with_the_objects_limits(api):
    schema = api.client.app.openapi()["components"]["schemas"]["EnrollmentOverrideSet"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["country"]["maxLength"] == 2
    assert schema["properties"]["enrollment_url"]["maxLength"] == 512
    assert "name" not in schema["properties"] and "ignore_server_validation" not in schema["properties"]


# --- secrets ---------------------------------------------------------------------------------------

def test_an_override_that_moves_the_ca_without_a_secret_never_gets_the_objects(api, tree):
    """The attack: a child domain points an ancestor's object at a server it controls and leaves the
    password out, so its devices would send the ancestor's password there."""
    a1, obj = tree["A1"], tree["object"]
    moved = api.ok("PUT", override_path(a1, obj), {"enrollment_url": "https://attacker.example.net/"})
    assert (moved["has_secret"], moved["uses_object_secret"]) == (False, False)
    assert api.ok("GET", f"{objects(a1)}/{obj}")["has_secret"] is False
    assert "password" not in sent_to_device(api, obj, a1)
    # Only a subject of its own: the object's CA, so the object's password.
    kept = api.ok("PUT", override_path(a1, obj), {"common_name": "branch.example.com"})
    assert kept["uses_object_secret"] is True
    assert sent_to_device(api, obj, a1)["password"] == "Global-Secret-1"


def test_an_overrides_own_secret_is_dropped_when_its_ca_moves_without_a_new_one(api, tree):
    a1, obj = tree["A1"], tree["object"]
    api.ok("PUT", override_path(a1, obj), BRANCH)
    same_ca = api.ok("PUT", override_path(a1, obj), {**BRANCH, "password": None, "organization": "Branch"})
    assert same_ca["has_secret"] is True  # left out, the same CA: kept
    moved = api.ok("PUT", override_path(a1, obj), {**BRANCH, "password": None,
                                                   "enrollment_url": "https://other.example.net/"})
    assert moved["has_secret"] is False
    given = api.ok("PUT", override_path(a1, obj), {**BRANCH, "password": "Branch-Secret-3"})
    assert given["has_secret"] is True and sent_to_device(api, obj, a1)["password"] == "Branch-Secret-3"
    removed = api.ok("PUT", override_path(a1, obj), {**BRANCH, "password": ""})
    assert removed["has_secret"] is False

    # The object's own change moves the CA of an override that does not name one: its secret goes.
    api.ok("PUT", override_path(a1, obj), {"organization": "Branch", "password": "Branch-Secret-4"})
    api.ok("PUT", f"{objects(GLOBAL)}/{obj}", {**EST, "enrollment_url": "https://ca2.example.com/",
                                               "password": "Global-Secret-5"})
    assert api.ok("GET", override_path(a1, obj))["has_secret"] is False
    assert sent_to_device(api, obj, a1)["password"] == "Global-Secret-5"  # the object's, for its new CA


def test_an_override_naming_its_own_ca_keeps_its_secret_when_the_object_moves(api, tree):
    a1, obj = tree["A1"], tree["object"]
    api.ok("PUT", override_path(a1, obj), BRANCH)
    api.ok("PUT", f"{objects(GLOBAL)}/{obj}", {**EST, "enrollment_url": "https://ca2.example.com/"})
    assert api.ok("GET", override_path(a1, obj))["has_secret"] is True
    assert sent_to_device(api, obj, a1)["password"] == "Branch-Secret-2"


# --- the object's changes and deletion -------------------------------------------------------------

def test_an_object_cannot_stop_allowing_overrides_while_they_exist(api, tree):
    obj, path = tree["object"], f"{objects(GLOBAL)}/{tree['object']}"
    api.ok("PUT", override_path(tree["A1"], obj), {"common_name": "branch.example.com"})
    refused = problem(api.call("PUT", path, json={**EST, "allow_overrides": False}), 409, "overrides_exist")
    assert f"A1 ({tree['A1']})" in refused["detail"]
    refused = problem(api.call("PUT", path, json={**EST, "enrollment_type": "scep",
                                                  "enrollment_url": "http://ca.example.com/", "username": "",
                                                  "password": None}), 409, "overrides_exist")
    assert api.ok("GET", path)["allow_overrides"] is True and api.ok("GET", path)["enrollment_type"] == "est"
    api.call("DELETE", override_path(tree["A1"], obj))
    assert api.ok("PUT", path, {**EST, "allow_overrides": False})["allow_overrides"] is False


def test_an_object_change_that_an_override_cannot_follow_is_refused_naming_it(api, tree):
    obj, path = tree["object"], f"{objects(GLOBAL)}/{tree['object']}"
    api.ok("PUT", override_path(tree["A1"], obj), {"validity_days": 60})
    refused = problem(api.call("PUT", path, json={**EST, "renew_before_days": 90}), 409, "override_conflict")
    assert f"A1 ({tree['A1']})" in refused["detail"] and "renew_before_days=90" in refused["detail"]
    assert api.ok("GET", path)["renew_before_days"] is None


def test_deleting_the_object_or_the_domain_leaves_no_override_behind(api, tree):
    obj = tree["object"]
    api.ok("PUT", override_path(tree["A1"], obj), {"common_name": "branch.example.com"})
    assert api.call("DELETE", f"{objects(GLOBAL)}/{obj}").status_code == 204
    assert override_rows(api) == []

    other = api.enrollment_object("other", enrollment_type="self_signed", allow_overrides=True)
    api.ok("PUT", override_path(tree["A11"], other["id"]), {"common_name": "leaf.example.com"})
    with Session(api.engine) as session:  # a leaf domain deleted (the database removes its overrides)
        session.delete(session.get(Domain, uuid.UUID(tree["A11"])))
        session.commit()
    assert override_rows(api) == []


# --- certfleet's own checks use the domain's values ------------------------------------------------

def test_the_revocation_scan_asks_the_overrides_ocsp_and_the_bundle_checks_its_ca(api, tree):
    obj, a1 = tree["object"], tree["A1"]
    api.ok("PUT", f"{objects(GLOBAL)}/{obj}", {**EST, "revocation_ocsp": True, "ocsp_url": "http://ocsp.example.com/"})
    api.ok("PUT", override_path(a1, obj), {"ocsp_url": "http://ocsp.branch.example.net/",
                                           "enrollment_url": "https://est.branch.example.net:9443/"})
    with Session(api.engine) as session:
        stored = session.get(EnrollmentObject, uuid.UUID(obj))
        index = OverrideIndex.load(session)
        assert scan_settings(index.applied_in(stored, uuid.UUID(a1)).obj)["ocsp_url"] == "http://ocsp.branch.example.net/"
        assert scan_settings(index.applied_in(stored, uuid.UUID(tree["A"])).obj)["ocsp_url"] == "http://ocsp.example.com/"
        servers = servers_to_check(session, Settings(secret_key=SECRET_KEY))
    assert {(s.host, s.port) for s in servers} >= {("ca.example.com", 443), ("est.branch.example.net", 9443)}


def test_an_overrides_secret_is_re_encrypted_by_a_key_rotation(api, tree):
    api.ok("PUT", override_path(tree["A1"], tree["object"]), BRANCH)
    new = SecretBox("the-next-installation-key")
    with Session(api.engine) as session:
        report = rotate_secrets(session, SecretBox(SECRET_KEY), new)
        session.commit()
    assert report.rotated["enrollment_override"] == 1
    assert new.open(override_rows(api)[0].secret_blob) == b"Branch-Secret-2"
