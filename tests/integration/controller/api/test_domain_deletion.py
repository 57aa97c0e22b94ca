"""Deleting a leaf domain through the API, end to end in one process: the controller's app on SQLite
and the in-process broker, the device simulator over HTTP on loopback, and the worker's runner taking
the jobs in the test's thread, all on one manual clock. What an operator sees is checked: the answers
and refusals, the deletion's progress on the domain, the trustpoints gone from the devices, where the
devices end up, and what went with the domain."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlmodel import Session, select

from services.controller.scheduling.scheduler import Scheduler
from services.controller.scheduling.schedules import default_schedules
from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from shared.models import Batch
from tests.support.api import GLOBAL, Api, make_settings, problem, start_api
from tests.support.clock import ManualClock
from tests.support.inline_worker import run_unfinished, worker_context

SERIALS = (f"FTD-{n:06d}" for n in itertools.count(1))
ON_BOTH = pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=40, seed=15)) as running:
        yield running


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def api(db_engine, stub_broker, clock) -> Iterator[Api]:
    client, tokens = start_api(db_engine, stub_broker, clock=clock)
    with client:
        yield Api(client=client, engine=db_engine, broker=stub_broker, tokens=tokens)


@pytest.fixture
def worker(api, clock, sim):
    ctx = worker_context(api.engine, clock)
    yield lambda: run_unfinished(ctx, api.broker)
    ctx.close()
    httpx.put(f"{sim.url}/api/offline", json={"serials": []}).raise_for_status()


def enrolled_device(api: Api, sim: RunningSim, domain: str, *objects: dict) -> dict:
    """A device of the simulated fleet registered in ``domain``, with a trustpoint per object (enrolled
    once the worker runs)."""
    serial = next(SERIALS)
    device = api.device(serial, domain=domain, management_url=f"{sim.url}/api/devices/{serial}")
    for obj in objects:
        api.add(device["id"], obj["id"], domain=domain)
    return device


def on_device(sim: RunningSim, device: dict) -> set[str]:
    """The trustpoint names the simulated device holds."""
    answer = httpx.get(f"{sim.url}/api/devices/{device['serial']}/trustpoints")
    answer.raise_for_status()
    return {tp["name"] for tp in answer.json()}


def as_token(api: Api, token: str, method: str, path: str, **kw) -> httpx.Response:
    return api.call(method, path, role=None, headers={"Authorization": f"Bearer {token}"}, **kw)


def token_for(api: Api, domain: str, role: str = "admin") -> str:
    return api.ok("POST", "/tokens", {"name": f"{role} of {domain[:8]}", "role": role, "domain_id": domain},
                  status=201)["token"]


def run_schedule(api: Api, clock: ManualClock) -> str:
    [spec] = [s for s in default_schedules(make_settings(api.engine)) if s.name == "domain-deletions"]
    [record] = Scheduler(api.engine, api.broker, make_settings(api.engine), specs=[spec], clock=clock,
                         holder="test").tick()
    assert record.outcome == "succeeded", record.detail
    return record.detail


# --- the whole way ----------------------------------------------------------------------------------


@ON_BOTH
def test_a_leaf_domain_goes_once_delete_jobs_removed_its_devices_trustpoints(api, sim, worker, clock):
    region = api.domain("EMEA")
    branch = api.domain("Branch-7", parent=region)
    own = api.enrollment_object("vpn-branch", domain=branch)
    shared = api.enrollment_object("vpn-global")
    first = enrolled_device(api, sim, branch, own, shared)
    second = enrolled_device(api, sim, branch, own)
    branch_token = token_for(api, branch, "read_only")
    worker()
    assert on_device(sim, first) == {"vpn-branch", "vpn-global"} and on_device(sim, second) == {"vpn-branch"}

    started = api.ok("DELETE", f"/domains/{branch}", status=202)
    assert (started["state"], started["target_domain_id"], started["devices"], started["trustpoints"]) == (
        "removing_trustpoints", region, 2, 3)
    assert (started["jobs"]["total"], started["jobs"]["queued"], started["jobs"]["finished"]) == (3, 3, False)
    assert started["requested_by"] == "test admin (admin)"
    shown = api.ok("GET", f"/domains/{branch}")["deletion"]
    assert shown["state"] == "removing_trustpoints" and shown["jobs"]["id"] == started["jobs"]["id"]
    assert "3 job(s) unfinished" in shown["detail"]

    # Nothing new in the domain meanwhile, each refusal saying why; asking again is refused too.
    refusals = [
        api.call("POST", f"/domains/{branch}/devices", json={"name": "late", "serial": "LATE-1",
                                                             "management_url": "http://127.0.0.1:9/x"}),
        api.call("POST", f"/domains/{branch}/devices/{second['id']}/trustpoints",
                 json={"enrollment_object_id": shared["id"]}),
        api.call("POST", f"/domains/{branch}/enrollment-objects",
                 json={"name": "late", "enrollment_type": "self_signed", "key_type": "ecdsa", "key_size": 256}),
        api.call("POST", "/domains", json={"name": "Floor-2", "parent_id": branch}),
        api.call("POST", "/tokens", json={"name": "late", "role": "read_only", "domain_id": branch}),
    ]
    for refused in refusals:
        body = problem(refused, 409, "domain_being_deleted")
        assert "Branch-7 is being deleted" in body["detail"] and f"/api/v1/domains/{branch}" in body["detail"]
    problem(api.call("DELETE", f"/domains/{branch}"), 409, "domain_deletion_running")
    # A bulk enrollment from above leaves its devices out, counted as skipped.
    from_above = api.ok("POST", f"/domains/{region}/bulk-enrollments",
                        {"enrollment_object_id": shared["id"], "selection": {"all": True}}, status=202)
    assert (from_above["selected"], from_above["skipped"], from_above["total"]) == (2, 2, 0)
    assert run_schedule(api, clock) == "0 domain(s) deleted; 1 waiting: Branch-7 (removing_trustpoints)"

    worker()
    assert on_device(sim, first) == set() and on_device(sim, second) == set()
    ready = api.ok("GET", f"/domains/{branch}")["deletion"]
    assert (ready["state"], ready["trustpoints"], ready["jobs"]["succeeded"]) == ("completing", 0, 3)

    clock.advance(15)
    assert run_schedule(api, clock) == "1 domain(s) deleted (Branch-7)"
    problem(api.get(f"/domains/{branch}"), 404, "not_found")
    devices = {d["serial"]: d for d in api.ok("GET", f"/domains/{region}/devices")["items"]}
    assert {s: d["domain_id"] for s, d in devices.items()} == {first["serial"]: region, second["serial"]: region}
    assert devices[first["serial"]]["management_url"] == first["management_url"]  # still registered
    assert api.ok("GET", f"/domains/{region}/trustpoints")["total"] == 0
    problem(api.get(f"/domains/{region}/enrollment-objects/{own['id']}"), 404, "not_found")
    assert api.ok("GET", f"/domains/{GLOBAL}/enrollment-objects/{shared['id']}")["id"] == shared["id"]
    # Its delete jobs are read under the devices' new domain; a token homed there no longer works.
    job_ids = [j["id"] for j in api.ok("GET", f"/domains/{region}/jobs?kind=delete")["items"]]
    assert len(job_ids) == 3
    problem(as_token(api, branch_token, "GET", f"/domains/{region}"), 401, "token_revoked")
    listed = {t["name"]: t for t in api.ok("GET", "/tokens")["items"]}
    assert (listed["read_only of " + branch[:8]]["state"], listed["read_only of " + branch[:8]]["domain_id"]) == (
        "revoked", region)
    # Completing is done once: the next pass has nothing to do.
    clock.advance(15)
    assert run_schedule(api, clock) == "no domain deletion under way"


@ON_BOTH
def test_a_failed_delete_job_keeps_the_domain_until_a_retry_removes_the_rest(api, sim, worker, clock):
    branch = api.domain("Branch-8")
    obj = api.enrollment_object("vpn", domain=branch)
    reachable, unreachable = (enrolled_device(api, sim, branch, obj) for _ in range(2))
    worker()
    httpx.put(f"{sim.url}/api/offline", json={"serials": [unreachable["serial"]]}).raise_for_status()

    first = api.ok("DELETE", f"/domains/{branch}", status=202)
    worker()
    failed = api.ok("GET", f"/domains/{branch}")["deletion"]
    assert (failed["state"], failed["trustpoints"], failed["jobs"]["succeeded"], failed["jobs"]["failed"]) == (
        "failed", 1, 1, 1)
    assert failed["jobs"]["failures"][0]["error_code"] == "device_unreachable"
    assert "DELETE the domain again to retry" in failed["detail"] and "force=true" in failed["detail"]
    assert run_schedule(api, clock) == "0 domain(s) deleted; 1 waiting: Branch-8 (failed)"
    assert api.ok("GET", f"/domains/{branch}/devices")["total"] == 2

    httpx.put(f"{sim.url}/api/offline", json={"serials": []}).raise_for_status()
    retried = api.ok("DELETE", f"/domains/{branch}", status=202)
    assert retried["jobs"]["id"] != first["jobs"]["id"]
    assert (retried["state"], retried["jobs"]["total"], retried["trustpoints"]) == ("removing_trustpoints", 1, 1)
    worker()
    assert on_device(sim, unreachable) == set() and on_device(sim, reachable) == set()
    # Asked again with nothing left, it completes at once.
    done = api.ok("DELETE", f"/domains/{branch}", status=200)
    assert (done["state"], done["devices"], done["target_domain_id"], done["removed_enrollment_objects"]) == (
        "completed", 2, GLOBAL, 1)
    assert api.ok("GET", f"/domains/{GLOBAL}/devices?serial={unreachable['serial']}")["items"][0]["domain_id"] == GLOBAL
    problem(api.get(f"/domains/{branch}"), 404, "not_found")


def test_force_forgets_the_trustpoints_it_could_not_remove_and_leaves_them_on_the_device(api, sim, worker):
    target = api.domain("Spares")
    branch = api.domain("Branch-9")
    obj = api.enrollment_object("vpn", domain=branch)
    device = enrolled_device(api, sim, branch, obj)
    worker()
    refreshed = api.ok("POST", f"/domains/{branch}/bulk-actions", {
        "action": "refresh", "enrollment_object_id": obj["id"], "selection": {"all": True}}, status=202)
    worker()
    httpx.put(f"{sim.url}/api/offline", json={"serials": [device["serial"]]}).raise_for_status()
    api.ok("DELETE", f"/domains/{branch}?target_domain_id={target}", status=202)
    worker()
    assert api.ok("GET", f"/domains/{branch}")["deletion"]["state"] == "failed"

    forced = api.ok("DELETE", f"/domains/{branch}?force=true", status=200)
    assert (forced["state"], forced["forgotten_trustpoints"], forced["target_domain_id"]) == ("completed", 1, target)
    moved = api.ok("GET", f"/domains/{target}/devices")["items"]
    assert [d["serial"] for d in moved] == [device["serial"]]
    assert api.ok("GET", f"/domains/{target}/devices/{device['id']}/trustpoints")["total"] == 0
    httpx.put(f"{sim.url}/api/offline", json={"serials": []}).raise_for_status()
    assert on_device(sim, device) == {"vpn"}  # forgotten by certfleet, not removed from the device
    # The domain's bulk-operation records went with it (its jobs stay readable under the target).
    problem(api.get(f"/domains/{target}/bulk-actions/{refreshed['id']}"), 404, "not_found")
    with Session(api.engine) as session:
        assert session.exec(select(Batch).where(Batch.domain_id == uuid.UUID(branch))).all() == []
    assert api.ok("GET", f"/domains/{target}/jobs?kind=refresh")["total"] == 1


def test_a_leaf_with_nothing_to_remove_goes_at_once(api):
    branch = api.domain("Lab")
    obj = api.enrollment_object("lab-vpn", domain=branch)
    done = api.ok("DELETE", f"/domains/{branch}", status=200)
    assert (done["state"], done["devices"], done["jobs"], done["removed_enrollment_objects"]) == (
        "completed", 0, None, 1)
    assert done["detail"] == "domain Lab is deleted; its 0 device(s) are in domain Global"
    problem(api.get(f"/domains/{GLOBAL}/enrollment-objects/{obj['id']}"), 404, "not_found")


# --- refusals -----------------------------------------------------------------------------------------


def test_each_refusal_says_why_and_what_to_do(api, sim):
    region = api.domain("Region")
    leaf = api.domain("Leaf", parent=region)
    other = api.domain("Other")
    problem(api.call("DELETE", f"/domains/{GLOBAL}"), 409, "root_domain")
    not_leaf = problem(api.call("DELETE", f"/domains/{region}"), 409, "domain_not_leaf")
    assert not_leaf["children"] == ["Leaf"] and "only a leaf domain can be deleted" in not_leaf["detail"]
    problem(as_token(api, token_for(api, leaf), "DELETE", f"/domains/{leaf}"), 409, "home_domain")

    webhook = api.ok("POST", f"/domains/{leaf}/webhooks",
                     {"url": "https://hooks.example.com/a", "secret": "s" * 20, "name": "pager"}, status=201)
    refused = problem(api.call("DELETE", f"/domains/{leaf}"), 409, "domain_has_webhooks")
    assert "pager (https://hooks.example.com/a)" in refused["detail"] and "delete them first" in refused["detail"]
    api.ok("DELETE", f"/domains/{leaf}/webhooks/{webhook['id']}", status=204)

    # A device moved out keeps a trustpoint of the leaf's object: the object cannot go with the leaf.
    obj = api.enrollment_object("leaf-vpn", domain=leaf)
    moved = enrolled_device(api, sim, leaf, obj)
    api.ok("PATCH", f"/domains/{GLOBAL}/devices/{moved['id']}", {"domain_id": other})
    in_use = problem(api.call("DELETE", f"/domains/{leaf}"), 409, "enrollment_object_in_use")
    assert f"trustpoint leaf-vpn of device {moved['name']} (object leaf-vpn)" in in_use["detail"]

    api.ok("PATCH", f"/domains/{GLOBAL}/devices/{moved['id']}", {"domain_id": leaf})
    busy = problem(api.call("DELETE", f"/domains/{leaf}"), 409, "domain_devices_busy")  # its enrollment job
    assert busy["job_id"] and "wait for them to end" in busy["detail"]

    problem(api.call("DELETE", f"/domains/{leaf}?target_domain_id={leaf}"), 422, "invalid_deletion_target")
    problem(api.call("DELETE", f"/domains/{leaf}?target_domain_id={uuid.uuid4()}"), 404, "not_found")
    problem(api.call("DELETE", f"/domains/{uuid.uuid4()}"), 404, "not_found")
    assert api.ok("GET", f"/domains/{leaf}")["deletion"] is None  # no refusal left a mark


def test_only_an_admin_whose_tokens_reach_the_domain_may_delete_it(api):
    a = api.domain("A")
    a1 = api.domain("A1", parent=a)
    a2 = api.domain("A2", parent=a)
    b = api.domain("B")
    for role in ("network_admin", "read_only"):
        refused = problem(api.call("DELETE", f"/domains/{a1}", role=role), 403, "forbidden")
        assert "needs role admin" in refused["detail"]
    sibling = token_for(api, b)
    problem(as_token(api, sibling, "DELETE", f"/domains/{a1}"), 404, "not_found")
    below = token_for(api, a1)
    problem(as_token(api, below, "DELETE", f"/domains/{a2}"), 404, "not_found")
    # An admin of A reaches A1, but not a target outside A.
    admin_a = token_for(api, a)
    problem(as_token(api, admin_a, "DELETE", f"/domains/{a1}?target_domain_id={b}"), 404, "not_found")
    done = as_token(api, admin_a, "DELETE", f"/domains/{a1}")
    assert done.status_code == 200 and done.json()["target_domain_id"] == a
    assert api.ok("GET", f"/domains/{a}")["deletion"] is None
