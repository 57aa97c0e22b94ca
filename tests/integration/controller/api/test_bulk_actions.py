"""Bulk trustpoint actions and bulk weak-crypto through the API: which trustpoints a selection and
its filters reach, busy ones skipped and counted, delete and weak-crypto confirmed first, the
jobs on the bulk queue, progress from the jobs, and no trustpoint ever with two unfinished jobs."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import Session, func, select

from shared.events import BULK_QUEUE, JOBS_QUEUE
from shared.http_thread import ServerThread
from shared.models import Batch, Job, Trustpoint
from shared.states import Status, transition
from tests.support.api import GLOBAL, V1, Api, finish_jobs, install_certificate, problem, start_api
from tests.support.jobs import drain

pytestmark = pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)

ACTIONS = f"/domains/{GLOBAL}/bulk-actions"


def enrolled_fleet(api, n: int, *, name: str = "vpn", domain: str = GLOBAL) -> tuple[dict, list[dict]]:
    """``n`` devices, each with an available trustpoint of a new enrollment object; queues emptied."""
    obj = api.enrollment_object(name, domain=domain)
    devices = [api.device(f"{name.upper()}{i:03d}", domain=domain, name=f"edge-{name}-{i:03d}",
                          model="FTDv" if i % 2 else "FTD 3110") for i in range(n)]
    api.ok("POST", f"/domains/{domain}/bulk-enrollments",
           {"enrollment_object_id": obj["id"], "selection": {"all": True}}, status=202)
    finish_jobs(api.engine)
    drain(api.broker, BULK_QUEUE)
    return obj, devices


def trustpoint_ids(api) -> dict[str, str]:
    """Trustpoint id by device id."""
    with Session(api.engine) as session:
        return {str(tp.device_id): str(tp.id) for tp in session.exec(select(Trustpoint)).all()}


def statuses(api) -> dict[str, str]:
    """Identity status by device id."""
    with Session(api.engine) as session:
        return {str(tp.device_id): tp.identity_status for tp in session.exec(select(Trustpoint)).all()}


def batch_jobs(api, batch_id: str) -> list[Job]:
    with Session(api.engine) as session:
        return list(session.exec(select(Job).where(Job.batch_id == uuid.UUID(batch_id))).all())


def start(api, body: dict, *, status: int = 202) -> dict:
    return api.ok("POST", ACTIONS, body, status=status)


def test_re_enroll_everything_expiring_within_30_days(api):
    obj, devices = enrolled_fleet(api, 6)
    tps = trustpoint_ids(api)
    days = [-2, 5, 29, 31, 90, None]  # expired, expiring, just in, just out, later, no certificate
    for device, expires_in in zip(devices, days, strict=True):
        if expires_in is not None:
            install_certificate(api.engine, tps[device["id"]], expires_in_days=expires_in)
    # The CA certificate's end does not count, only the identity certificate's.
    install_certificate(api.engine, tps[devices[4]["id"]], expires_in_days=3, role="ca")

    response = api.post(ACTIONS, {"action": "re_enroll", "enrollment_object_id": obj["id"],
                                  "selection": {"all": True}, "filters": {"expiring_within_days": 30}})
    assert response.status_code == 202, response.text
    batch = response.json()
    assert response.headers["location"] == f"{V1}{ACTIONS}/{batch['id']}"
    assert (batch["action"], batch["trustpoint_name"], batch["filters"]) == (
        "re_enroll", "vpn", {"expiring_within_days": 30})
    assert batch["selection"] == {"all": True}
    assert (batch["selected"], batch["skipped"], batch["total"], batch["queued"]) == (3, 0, 3, 3)

    chosen = {d["id"] for d in devices[:3]}
    assert {k for k, v in statuses(api).items() if v == "in_progress"} == chosen
    jobs = batch_jobs(api, batch["id"])
    assert {str(j.device_id) for j in jobs} == chosen
    assert {(j.kind, j.reason, j.state) for j in jobs} == {("re_enroll", "bulk", "queued")}
    messages = drain(api.broker, BULK_QUEUE)
    assert sorted(m.args[0] for m in messages) == sorted(str(j.id) for j in jobs)
    assert {m.actor_name for m in messages} == {"re_enroll_trustpoint"} and not drain(api.broker, JOBS_QUEUE)


def test_refresh_of_the_failed_trustpoints_of_one_model(api):
    obj, devices = enrolled_fleet(api, 6)
    with Session(api.engine) as session:
        for tp in session.exec(select(Trustpoint)).all():
            if str(tp.device_id) in {devices[0]["id"], devices[1]["id"], devices[3]["id"]}:
                transition(tp, now=datetime.now(UTC), identity=Status.FAILED, error_code="device_unreachable",
                           error_message="device unreachable: connection refused")
                session.add(tp)
        session.commit()

    batch = start(api, {"action": "refresh", "enrollment_object_id": obj["id"], "selection": {"model": "FTDv"},
                        "filters": {"identity_status": "failed"}})
    # Failed: devices 0, 1 and 3; of model FTDv: the odd ones.
    assert (batch["selected"], batch["total"]) == (2, 2)
    assert {str(j.device_id) for j in batch_jobs(api, batch["id"])} == {devices[1]["id"], devices[3]["id"]}
    with Session(api.engine) as session:
        refreshed = session.exec(select(Trustpoint).where(Trustpoint.device_id.in_(
            [uuid.UUID(devices[1]["id"]), uuid.UUID(devices[3]["id"])]))).all()
    assert {(tp.ca_status, tp.identity_status, tp.error_code) for tp in refreshed} == {
        ("in_progress", "in_progress", None)}
    assert statuses(api)[devices[0]["id"]] == "failed"
    assert {m.actor_name for m in drain(api.broker, BULK_QUEUE)} == {"refresh_trustpoint"}


def test_delete_needs_confirmation_then_deletes_by_pattern_and_ids(api):
    obj, devices = enrolled_fleet(api, 4)
    body = {"action": "delete", "enrollment_object_id": obj["id"], "selection": {"name_pattern": "edge-vpn-00?"}}
    refused = problem(api.post(ACTIONS, body), 409, "delete_confirmation_required")
    assert "from 4 devices" in refused["detail"] and '"confirm": true' in refused["detail"]
    assert refused["selected"] == 4
    with Session(api.engine) as session:
        assert session.exec(select(func.count()).select_from(Batch).where(Batch.action == "delete")).one() == 0
        assert session.exec(select(func.count()).select_from(Job).where(Job.kind == "delete")).one() == 0

    batch = start(api, {**body, "selection": {"device_ids": [devices[0]["id"], devices[2]["id"]]}, "confirm": True})
    assert (batch["action"], batch["total"], batch["skipped"]) == ("delete", 2, 0)
    assert {j.kind for j in batch_jobs(api, batch["id"])} == {"delete"}
    assert set(statuses(api).values()) == {"available"}  # deleted by the worker, not before
    assert {m.actor_name for m in drain(api.broker, BULK_QUEUE)} == {"delete_trustpoint"}


def test_a_selection_that_matches_nothing_is_refused(api):
    obj, _ = enrolled_fleet(api, 2)
    other = api.enrollment_object("unused")
    bare = api.device("BARE001", name="bare")
    cases = [
        ({"selection": {"model": "no-such-model"}}, "devices of model 'no-such-model'"),
        ({"selection": {"all": True}, "filters": {"expiring_within_days": 30}}, "ending within 30 days"),
        ({"selection": {"all": True}, "filters": {"identity_status": "pending"}}, "identity status pending"),
        ({"selection": {"device_ids": [bare["id"]]}}, "1 devices by id"),
        ({"selection": {"all": True}, "enrollment_object_id": other["id"]}, "no trustpoint unused"),
    ]
    for fields, words in cases:
        body = {"action": "re_enroll", "enrollment_object_id": obj["id"], **fields}
        detail = problem(api.post(ACTIONS, body), 422, "empty_selection")["detail"]
        assert "matches the selection" in detail and words in detail, detail
    # Confirmed or not, a delete of nothing says so rather than asking to confirm.
    problem(api.post(ACTIONS, {"action": "delete", "enrollment_object_id": obj["id"],
                               "selection": {"model": "nope"}}), 422, "empty_selection")
    assert api.ok("GET", ACTIONS)["total"] == 0


def test_a_trustpoint_busy_with_a_job_is_skipped_and_counted(api):
    obj, devices = enrolled_fleet(api, 5)
    single = api.ok("POST", f"/domains/{GLOBAL}/devices/{devices[2]['id']}/trustpoints/vpn/refresh", status=202)
    batch = start(api, {"action": "re_enroll", "enrollment_object_id": obj["id"], "selection": {"all": True}})
    assert (batch["selected"], batch["skipped"], batch["total"]) == (5, 1, 4)
    assert devices[2]["id"] not in {str(j.device_id) for j in batch_jobs(api, batch["id"])}
    with Session(api.engine) as session:
        busy = session.exec(select(Job).where(Job.device_id == uuid.UUID(devices[2]["id"]),
                                              Job.state == "queued")).all()
    assert [str(j.id) for j in busy] == [single["job"]["id"]]

    again = start(api, {"action": "refresh", "enrollment_object_id": obj["id"], "selection": {"all": True}})
    assert (again["selected"], again["skipped"], again["total"], again["finished"]) == (5, 5, 0, True)
    # The single action refuses a trustpoint a bulk action is working on, as it refuses its own.
    problem(api.post(f"/domains/{GLOBAL}/devices/{devices[0]['id']}/trustpoints/vpn/re-enroll"),
            409, "job_in_progress")


def test_an_unknown_or_malformed_action_is_refused(api):
    obj, _ = enrolled_fleet(api, 1)
    refused = problem(api.post(ACTIONS, {"action": "regenerate_keyring", "enrollment_object_id": obj["id"],
                                         "selection": {"all": True}}), 422, "unknown_action")
    assert "'regenerate_keyring'" in refused["detail"] and "re_enroll, refresh, delete" in refused["detail"]
    problem(api.post(ACTIONS, {"action": "refresh", "enrollment_object_id": obj["id"], "selection": {"all": True},
                               "filters": {"expiring_within_days": -1}}), 422, "validation_error")
    problem(api.post(ACTIONS, {"action": "refresh", "enrollment_object_id": obj["id"], "selection": {"all": True},
                               "filters": {"serial": "x"}}), 422, "validation_error")
    problem(api.post(ACTIONS, {"action": "refresh", "enrollment_object_id": obj["id"]}), 422, "validation_error")


def test_read_only_may_follow_but_not_start(api):
    obj, _ = enrolled_fleet(api, 2)
    body = {"action": "refresh", "enrollment_object_id": obj["id"], "selection": {"all": True}}
    problem(api.call("POST", ACTIONS, json=body, role="read_only"), 403, "forbidden")
    problem(api.call("POST", f"/domains/{GLOBAL}/bulk-weak-crypto", role="read_only",
                     json={"selection": {"all": True}, "weak_crypto": False}), 403, "forbidden")
    batch = start(api, body)
    assert api.ok("GET", f"{ACTIONS}/{batch['id']}", role="read_only")["total"] == 2
    problem(api.call("GET", ACTIONS, role=None), 401, "unauthorized")


def test_another_domain_s_object_trustpoints_and_batches_are_not_found(api):
    east, west = api.domain("East"), api.domain("West")
    east_obj, _ = enrolled_fleet(api, 2, name="east", domain=east)
    west_obj, _ = enrolled_fleet(api, 2, name="west", domain=west)
    body = {"action": "re_enroll", "enrollment_object_id": east_obj["id"], "selection": {"all": True}}
    problem(api.post(f"/domains/{west}/bulk-actions", body), 404, "not_found")
    batch = api.ok("POST", f"/domains/{east}/bulk-actions", body, status=202)
    assert batch["total"] == 2
    problem(api.get(f"/domains/{west}/bulk-actions/{batch['id']}"), 404, "not_found")
    assert api.ok("GET", f"/domains/{west}/bulk-actions")["total"] == 0
    assert api.ok("GET", f"{ACTIONS}/{batch['id']}")["id"] == batch["id"]  # the parent sees it
    # An action is not an enrollment, nor the other way round.
    problem(api.get(f"/domains/{east}/bulk-enrollments/{batch['id']}"), 404, "not_found")
    assert api.ok("GET", f"/domains/{east}/bulk-enrollments")["total"] == 1
    assert [b["action"] for b in api.ok("GET", f"/domains/{east}/bulk-actions")["items"]] == ["re_enroll"]
    assert west_obj["id"] != east_obj["id"]


def test_progress_counts_and_failures_once_the_jobs_end(api):
    obj, devices = enrolled_fleet(api, 4)
    batch = start(api, {"action": "re_enroll", "enrollment_object_id": obj["id"], "selection": {"all": True}})
    ids = [j.id for j in sorted(batch_jobs(api, batch["id"]), key=lambda j: str(j.device_id))]
    now = datetime.now(UTC)
    with Session(api.engine) as session:
        session.execute(update(Job).where(Job.id == ids[0]).values(state="running"))
        session.execute(update(Job).where(Job.id == ids[1]).values(
            state="failed", finished_at=now, error_code="ca_rejected", error_message="the CA refused: badRequest"))
        session.commit()
    running = api.ok("GET", f"{ACTIONS}/{batch['id']}")
    assert (running["running"], running["failed"], running["queued"], running["finished"]) == (1, 1, 2, False)
    assert running["eta_seconds"] is not None

    finish_jobs(api.engine)
    done = api.ok("GET", f"{ACTIONS}/{batch['id']}")
    assert (done["succeeded"], done["failed"], done["queued"], done["running"]) == (3, 1, 0, 0)
    assert done["finished"] is True and done["eta_seconds"] == 0
    assert done["failures"] == [{"error_code": "ca_rejected", "count": 1,
                                 "example_message": "the CA refused: badRequest"}]
    listed = api.ok("GET", ACTIONS)
    assert [(b["id"], b["succeeded"]) for b in listed["items"]] == [(batch["id"], 3)]


def test_weak_crypto_over_a_selection_needs_confirmation_to_enable(api):
    devices = [api.device(f"WC{i:03d}", name=f"weak-{i:03d}", model="FTDv" if i < 3 else "FTD 3110")
               for i in range(5)]
    path = f"/domains/{GLOBAL}/bulk-weak-crypto"
    refused = problem(api.post(path, {"selection": {"model": "FTDv"}, "weak_crypto": True}), 409,
                      "weak_crypto_confirmation_required")
    assert "3 of the selected devices" in refused["detail"] and '"confirm": true' in refused["detail"]
    assert not any(api.ok("GET", f"/domains/{GLOBAL}/devices/{d['id']}")["weak_crypto"] for d in devices)

    enabled = api.ok("POST", path, {"selection": {"model": "FTDv"}, "weak_crypto": True, "confirm": True})
    assert enabled == {"weak_crypto": True, "selected": 3, "changed": 3}
    # Nothing left to enable: no confirmation needed, nothing changed.
    assert api.ok("POST", path, {"selection": {"device_ids": [devices[0]["id"]]}, "weak_crypto": True})[
        "changed"] == 0
    assert [api.ok("GET", f"/domains/{GLOBAL}/devices/{d['id']}")["weak_crypto"] for d in devices] == [
        True, True, True, False, False]
    disabled = api.ok("POST", path, {"selection": {"all": True}, "weak_crypto": False})
    assert disabled == {"weak_crypto": False, "selected": 5, "changed": 3}
    problem(api.post(path, {"selection": {"name_pattern": "nothing-*"}, "weak_crypto": False}), 422,
            "empty_selection")


def test_bulk_and_single_actions_at_once_leave_one_unfinished_job_per_trustpoint(db_engine, stub_broker):
    """A bulk re-enroll and a re-enroll of every trustpoint one by one, over real HTTP at the same
    time: each trustpoint gets exactly one job, from one or the other."""
    client, tokens = start_api(db_engine, stub_broker)
    with client:
        api = Api(client=client, engine=db_engine, broker=stub_broker, tokens=tokens)
        obj, devices = enrolled_fleet(api, 12)
        server = ServerThread(client.app).start()
        try:
            headers = {"Authorization": f"Bearer {tokens['admin']}"}
            base = f"{server.url}{V1}/domains/{GLOBAL}"

            def press(device):
                if device is None:
                    return http.post(f"{base}/bulk-actions", headers=headers, json={
                        "action": "re_enroll", "enrollment_object_id": obj["id"], "selection": {"all": True}})
                return http.post(f"{base}/devices/{device['id']}/trustpoints/vpn/re-enroll", headers=headers)

            with httpx.Client(timeout=60) as http, ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(press, [*devices[:6], None, *devices[6:]]))
        finally:
            server.stop()
    bulk = answers[6]
    assert bulk.status_code == 202, bulk.text
    singles = answers[:6] + answers[7:]
    assert {a.status_code for a in singles} <= {202, 409}
    started = sum(a.status_code == 202 for a in singles)
    assert bulk.json()["total"] + started == 12 and bulk.json()["skipped"] == started
    with Session(db_engine) as session:
        per_trustpoint = session.exec(select(Job.trustpoint_id, func.count()).where(Job.state == "queued")
                                      .group_by(Job.trustpoint_id)).all()
    assert len(per_trustpoint) == 12 and {n for _, n in per_trustpoint} == {1}
