"""What an audit entry says: the domain it is filed under (who may read it), what is read from an
answer (a problem's code, a created id: nothing else), and how the route is named."""

from __future__ import annotations

import json
import uuid

from fastapi import APIRouter

from services.controller.audit.entries import Caller, answer_facts, filed_under, outcome_of
from services.controller.audit.routes import NO_ROUTE, audited_routes, match
from shared.domains import GLOBAL_DOMAIN_ID

A, A1, B = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
PARENTS = {GLOBAL_DOMAIN_ID: None, A: GLOBAL_DOMAIN_ID, A1: A, B: GLOBAL_DOMAIN_ID}


def caller(home: uuid.UUID) -> Caller:
    return Caller(token_id=uuid.uuid4(), name="ops", role="admin", home_domain_id=home)


def test_an_entry_is_filed_where_it_was_addressed_when_the_caller_reaches_it_else_at_the_callers_home():
    asked = []

    def parents():
        asked.append(True)
        return PARENTS

    assert filed_under(A1, caller(A), parents) == A1  # below home
    assert filed_under(A, caller(A), parents) == A
    assert filed_under(None, caller(A), parents) == A  # no domain in the path (tokens)
    # A probe of a sibling, a parent or a domain that does not exist stays with the prober.
    assert filed_under(B, caller(A), parents) == A
    assert filed_under(GLOBAL_DOMAIN_ID, caller(A1), parents) == A1
    assert filed_under(uuid.uuid4(), caller(A), parents) == A
    # A token homed at Global reaches everything; nobody (no valid token) is filed where it aimed.
    assert filed_under(B, caller(GLOBAL_DOMAIN_ID), parents) == B
    assert filed_under(B, None, parents) == B
    assert filed_under(None, None, parents) == GLOBAL_DOMAIN_ID
    assert len(asked) == 4  # the tree is read only when the answer depends on it


def test_a_cycle_in_the_domain_tree_does_not_loop():
    looped = {A: A1, A1: A}
    assert filed_under(A1, caller(B), lambda: looped) == B


def test_only_the_problem_code_and_the_created_id_are_read_from_an_answer():
    created = str(uuid.uuid4())
    token = json.dumps({"id": created, "token": "cf_secret", "name": "ops"}).encode()
    assert answer_facts(token) == (None, uuid.UUID(created))
    job = str(uuid.uuid4())
    assert answer_facts(json.dumps({"trustpoint": {"id": created}, "job": {"id": job}}).encode()) == (
        None, uuid.UUID(job))
    refused = json.dumps({"code": "forbidden", "detail": "role read_only may not", "status": 403}).encode()
    assert answer_facts(refused) == ("forbidden", None)
    for junk in (b"", b"not json", b"[1, 2]", b'{"id": "not-an-id", "code": 7}'):
        assert answer_facts(junk) == (None, None)


def test_outcomes():
    assert [outcome_of(s) for s in (200, 201, 204, 302, 400, 401, 413, 500, 502)] == ["ok"] * 4 + ["failed"] * 5


def test_a_request_is_named_by_the_first_route_of_its_method_and_path():
    router = APIRouter(prefix="/domains/{domain_id}/devices")

    @router.post("/import")
    def import_devices(): ...

    @router.patch("/{device_id}")
    def update_device(): ...

    @router.post("/{device_id}/trustpoints/{name}/export")
    def export_certificate(): ...

    @router.post("/{device_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")
    def retry(): ...

    routes = audited_routes("/api/v1", [router])
    d, dev, hook, delivery = (str(uuid.uuid4()) for _ in range(4))
    found = match(routes, "POST", f"/api/v1/domains/{d}/devices/import")
    assert (found.action, found.path, found.params) == (
        "import_devices", "/api/v1/domains/{domain_id}/devices/import", {"domain_id": d})
    found = match(routes, "PATCH", f"/api/v1/domains/{d}/devices/{dev}")
    assert (found.action, found.domain_id, found.device_id, found.target_id) == (
        "update_device", uuid.UUID(d), uuid.UUID(dev), uuid.UUID(dev))
    found = match(routes, "POST", f"/api/v1/domains/{d}/devices/{dev}/trustpoints/vpn/export")
    assert (found.params["name"], found.target_id) == ("vpn", uuid.UUID(dev))
    found = match(routes, "POST", f"/api/v1/domains/{d}/devices/{dev}/webhooks/{hook}/deliveries/{delivery}/retry")
    assert found.target_id == uuid.UUID(delivery)  # the most specific id
    # A path the API does not have, or a method its path lacks: kept as sent, cut short.
    assert match(routes, "DELETE", f"/api/v1/domains/{d}/devices/import").action == NO_ROUTE
    unknown = match(routes, "POST", "/api/v1/" + "x" * 500)
    assert (unknown.action, len(unknown.path), unknown.params) == (NO_ROUTE, 255, {})
    # Not an id where one is expected: kept as text, never taken for an id.
    odd = match(routes, "PATCH", "/api/v1/domains/global/devices/" + "y" * 300)
    assert (odd.domain_id, odd.device_id, len(odd.params["device_id"])) == (None, None, 128)
