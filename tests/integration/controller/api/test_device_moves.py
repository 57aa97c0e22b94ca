"""Moving a device to another domain through the API: its trustpoints and certificates go with it,
each trustpoint whose enrollment object the new domain may not use raises an alert saying what to
do, and every later action that would deploy that object again is refused (re-enroll, the
scheduler's renewal, a job queued before the move), while refresh and delete stay allowed. In one
process: the controller's app, the device simulator on loopback and the worker's runner in the
test's thread, on one manual clock."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from services.controller.alerts.conditions import run_alert_conditions
from services.controller.scheduling.renewal_pass import run_renewal_pass
from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from shared.models import Job, Trustpoint
from shared.settings import Settings
from tests.support.api import GLOBAL, Api, make_settings, problem, start_api
from tests.support.clock import ManualClock
from tests.support.inline_worker import run_unfinished, worker_context

SERIALS = (f"FTD-{n:06d}" for n in itertools.count(1))
CODE = "CF-OBJECT-OUT-OF-DOMAIN"
ON_BOTH = pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=20, seed=16)) as running:
        yield running


@pytest.fixture
def clock() -> ManualClock:
    """Starts at the real time: the simulator issues the certificates by its own (real) clock."""
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def api(db_engine, stub_broker, clock) -> Iterator[Api]:
    client, tokens = start_api(db_engine, stub_broker, clock=clock)
    with client:
        yield Api(client=client, engine=db_engine, broker=stub_broker, tokens=tokens)


@pytest.fixture
def worker(api, clock):
    ctx = worker_context(api.engine, clock)
    yield lambda: run_unfinished(ctx, api.broker)
    ctx.close()


@pytest.fixture
def world(api, sim, worker):
    """Domains A, A1 below it and B beside it; a device in A1 enrolled with an object of each of
    Global, A and A1."""
    a = api.domain("A")
    domains = {"A": a, "A1": api.domain("A1", parent=a), "B": api.domain("B")}
    objects = {"vpn-global": api.enrollment_object("vpn-global"),
               "vpn-a": api.enrollment_object("vpn-a", domain=a),
               "vpn-a1": api.enrollment_object("vpn-a1", domain=domains["A1"])}
    serial = next(SERIALS)
    device = api.device(serial, domain=domains["A1"], management_url=f"{sim.url}/api/devices/{serial}")
    for obj in objects.values():
        api.add(device["id"], obj["id"], domain=domains["A1"])
    worker()
    return domains, device


def move(api: Api, device: dict, domain: str) -> dict:
    return api.ok("PATCH", f"/domains/{GLOBAL}/devices/{device['id']}", {"domain_id": domain})


def identities_on_device(sim: RunningSim, device: dict) -> dict[str, str]:
    """Each trustpoint's identity certificate (PEM), as the device holds it."""
    held = httpx.get(f"{sim.url}/api/devices/{device['serial']}/trustpoints").json()
    return {tp["name"]: next(c["pem"] for c in tp["certificates"] if c["role"] == "identity") for tp in held}


@ON_BOTH
def test_a_move_keeps_the_certificates_and_raises_an_alert_per_object_the_new_domain_may_not_use(api, world, sim,
                                                                                                  worker, clock):
    domains, device = world
    before = identities_on_device(sim, device)
    moved = move(api, device, domains["A"])
    assert moved["domain_id"] == domains["A"]
    [alert] = moved["alerts"]
    assert (alert["code"], alert["severity"], alert["trustpoint_name"], alert["domain_id"], alert["state"]) == (
        CODE, "major", "vpn-a1", domains["A"], "active")
    assert alert["title"] == "enrollment object not usable in the device's domain"
    assert alert["description"] == (
        f"trustpoint vpn-a1 of device {device['name']} was enrolled with enrollment object vpn-a1 of domain A1, "
        "which domain A (where the device is now) may not use: its certificates stay, but certfleet neither "
        "re-enrolls nor renews it with that object. Delete the trustpoint and add one with an enrollment object of "
        f"A or a domain above it, or move the device back to A1 (certfleet trustpoint delete {device['name']} vpn-a1)")
    listed = api.ok("GET", f"/domains/{domains['A']}/alerts?code={CODE}")["items"]
    assert [a["id"] for a in listed] == [alert["id"]]
    # The certificates moved with the device, in certfleet and on the device.
    trustpoints = api.ok("GET", f"/domains/{domains['A']}/devices/{device['id']}/trustpoints")["items"]
    assert {tp["name"]: tp["identity_status"] for tp in trustpoints} == dict.fromkeys(before, "available")
    assert all(tp["domain_id"] == domains["A"] for tp in trustpoints)
    assert identities_on_device(sim, device) == before

    # Beside the object's branch altogether: A's object is out of reach too; the first alert is updated.
    moved = move(api, device, domains["B"])
    assert [(a["trustpoint_name"], a["domain_id"]) for a in moved["alerts"]] == [
        ("vpn-a", domains["B"]), ("vpn-a1", domains["B"])]
    assert moved["alerts"][1]["id"] == alert["id"] and "which domain B (where" in moved["alerts"][1]["description"]
    assert api.ok("GET", f"/domains/{domains['A']}/alerts?code={CODE}")["total"] == 0  # A no longer sees it

    # Back where the objects are usable: the alerts clear at once.
    assert move(api, device, domains["A1"])["alerts"] == []
    assert api.ok("GET", f"/domains/{GLOBAL}/alerts/{alert['id']}")["state"] == "cleared"

    # Moved away again, then the enrollment deleted as the alert asks: the alert pass clears it.
    [again] = move(api, device, domains["A"])["alerts"]
    api.ok("DELETE", f"/domains/{domains['A']}/devices/{device['id']}/trustpoints/vpn-a1", status=202)
    worker()
    assert "vpn-a1" not in identities_on_device(sim, device)
    with Session(api.engine) as session:
        run_alert_conditions(session, now=clock(), settings=Settings(), circuits=None)
    assert api.ok("GET", f"/domains/{GLOBAL}/alerts/{again['id']}")["state"] == "cleared"
    assert api.ok("GET", f"/domains/{GLOBAL}/alerts?code={CODE}&state=open")["total"] == 0


def test_re_enrolling_with_an_object_the_new_domain_may_not_use_is_refused_refresh_and_delete_are_not(
        api, world, sim, worker):
    domains, device = world
    move(api, device, domains["B"])
    base = f"/domains/{domains['B']}/devices/{device['id']}/trustpoints"
    before = identities_on_device(sim, device)
    refused = problem(api.call("POST", f"{base}/vpn-a1/re-enroll"), 409, "enrollment_object_not_usable")
    assert "enrollment object vpn-a1 of domain A1, which domain B" in refused["detail"]
    assert "move the device back to A1" in refused["detail"]
    api.ok("POST", f"{base}/vpn-global/re-enroll", status=202)  # Global's objects are usable everywhere
    api.ok("POST", f"{base}/vpn-a1/refresh", status=202)  # reads the device: sends nothing of the object
    worker()
    after = identities_on_device(sim, device)
    assert after["vpn-a1"] == before["vpn-a1"] and after["vpn-global"] != before["vpn-global"]
    # A bulk re-enrollment cannot reach it either: from A1 the device is out of reach, from B the object.
    problem(api.call("POST", f"/domains/{domains['A1']}/bulk-actions",
                     json={"action": "re_enroll", "enrollment_object_id": _object_id(api, "vpn-a1"),
                           "selection": {"all": True}}), 422, "empty_selection")
    problem(api.call("POST", f"/domains/{domains['B']}/bulk-actions",
                     json={"action": "re_enroll", "enrollment_object_id": _object_id(api, "vpn-a1"),
                           "selection": {"all": True}}), 404, "not_found")
    api.ok("DELETE", f"{base}/vpn-a1", status=202)
    worker()
    assert "vpn-a1" not in identities_on_device(sim, device)


def _object_id(api: Api, name: str) -> str:
    with Session(api.engine) as session:
        return str(session.exec(select(Trustpoint.enrollment_object_id).where(Trustpoint.name == name)).first())


def test_a_job_queued_before_the_move_does_not_deploy_the_object_after_it(api, world, sim, worker):
    domains, device = world
    before = identities_on_device(sim, device)
    base = f"/domains/{domains['A1']}/devices/{device['id']}/trustpoints"
    queued = api.ok("POST", f"{base}/vpn-a1/re-enroll", status=202)["job"]
    move(api, device, domains["B"])
    worker()
    job = api.ok("GET", f"/domains/{domains['A1']}/jobs/{queued['id']}")  # jobs stay where they were asked
    assert (job["state"], job["error_code"]) == ("failed", "enrollment_object_not_usable")
    assert identities_on_device(sim, device)["vpn-a1"] == before["vpn-a1"]  # nothing was sent to the device
    shown = api.ok("GET", f"/domains/{domains['B']}/devices/{device['id']}/trustpoints/vpn-a1")
    assert shown["error_code"] == "enrollment_object_not_usable"


def test_the_renewal_pass_sets_a_moved_trustpoint_aside_and_renews_it_once_the_device_is_back(api, world, clock):
    domains, device = world
    move(api, device, domains["B"])
    with Session(api.engine) as session:
        session.execute(update(Trustpoint).values(renewal_due_at=clock() - timedelta(minutes=1)))
        session.commit()
    settings = make_settings(api.engine)
    with Session(api.engine) as session:
        result = run_renewal_pass(session, api.broker, now=clock(), settings=settings)
    assert (result.published, result.not_usable) == (1, 2)
    assert result.describe() == ("1 renewal published, 2 not renewed: their enrollment object is not usable in their "
                                 "device's domain")
    with Session(api.engine) as session:
        renewed = session.exec(select(Job.trustpoint_name).where(Job.reason == "renewal")).all()
        assert renewed == ["vpn-global"]
    shown = api.ok("GET", f"/domains/{domains['B']}/devices/{device['id']}/trustpoints/vpn-a1")
    assert (shown["renewal_error_code"], shown["renewal_failures"]) == ("enrollment_object_not_usable", 1)
    assert "move the device back to A1" in shown["renewal_error_message"]
    assert datetime.fromisoformat(shown["renewal_due_at"]) == clock() + timedelta(minutes=15)  # the first backoff

    # Back in A1 and due again: renewed as usual, nothing set aside.
    move(api, device, domains["A1"])
    clock.advance(6 * 3600)
    with Session(api.engine) as session:
        result = run_renewal_pass(session, api.broker, now=clock(), settings=settings)
    assert (result.published, result.not_usable) == (2, 0)
