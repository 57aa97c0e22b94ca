"""Bulk enrollment through the API: selections, skipped devices, the bulk queue, and
progress derived from the jobs (counts, failures by code, ETA)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from shared.events import BULK_QUEUE, JOBS_QUEUE
from shared.models import Batch, Job, Trustpoint
from tests.support.api import GLOBAL, problem

pytestmark = pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)


def queued(broker, queue: str) -> list[dramatiq.Message]:
    q = broker.queues.get(queue)
    out = []
    while q is not None and not q.empty():
        out.append(dramatiq.Message.decode(q.get_nowait()))
    return out


def fleet(api, n: int = 6) -> list[dict]:
    return [api.device(f"BULK{i:03d}", model="FTD 3110" if i % 2 else "FTDv", name=f"edge-{i:03d}")
            for i in range(n)]


def start(api, body: dict, *, status: int = 202) -> dict:
    return api.ok("POST", f"/domains/{GLOBAL}/bulk-enrollments", body, status=status)


def test_all_devices_get_a_trustpoint_and_a_job_on_the_bulk_queue(api):
    devices = fleet(api)
    obj = api.enrollment_object("bulk-vpn")
    api.add(devices[0]["id"], obj["id"])  # already has it: skipped
    queued(api.broker, JOBS_QUEUE)

    batch = start(api, {"enrollment_object_id": obj["id"], "selection": {"all": True}})
    assert (batch["selected"], batch["skipped"], batch["total"], batch["queued"]) == (6, 1, 5, 5)
    assert batch["finished"] is False and batch["eta_seconds"] is None

    messages = queued(api.broker, BULK_QUEUE)
    assert len(messages) == 5 and not queued(api.broker, JOBS_QUEUE)
    assert {m.actor_name for m in messages} == {"enroll_trustpoint"}
    assert all(len(m.args) == 1 and not m.kwargs for m in messages)  # ids only
    with Session(api.engine) as session:
        jobs = session.exec(select(Job).where(Job.batch_id == uuid.UUID(batch["id"]))).all()
        assert sorted(str(j.id) for j in jobs) == sorted(m.args[0] for m in messages)
        names = session.exec(select(Trustpoint.name)).all()
    assert names == ["bulk-vpn"] * 6


def test_selection_by_ids_pattern_and_model(api):
    devices = fleet(api)
    a = api.enrollment_object("by-ids")
    batch = start(api, {"enrollment_object_id": a["id"],
                        "selection": {"device_ids": [devices[1]["id"], devices[2]["id"]]}})
    assert batch["total"] == 2
    b = api.enrollment_object("by-pattern")
    batch = start(api, {"enrollment_object_id": b["id"], "selection": {"name_pattern": "edge-00?"}})
    assert batch["total"] == 6
    c = api.enrollment_object("by-model")
    batch = start(api, {"enrollment_object_id": c["id"], "selection": {"model": "FTDv"}})
    assert batch["total"] == 3
    d = api.enrollment_object("by-both")
    batch = start(api, {"enrollment_object_id": d["id"], "selection": {"name_pattern": "*5", "model": "FTD 3110"}})
    assert batch["total"] == 1


def test_bad_selections_are_refused_with_codes(api):
    devices = fleet(api, 2)
    obj = api.enrollment_object("bad")
    path = f"/domains/{GLOBAL}/bulk-enrollments"
    problem(api.call("POST", path, json={"enrollment_object_id": obj["id"],
                                         "selection": {"all": True, "model": "FTDv"}}), 422, "validation_error")
    problem(api.call("POST", path, json={"enrollment_object_id": obj["id"], "selection": {}}),
            422, "validation_error")
    problem(api.call("POST", path, json={"enrollment_object_id": obj["id"], "selection": {"model": "nope"}}),
            422, "empty_selection")
    child = api.domain("branch")
    other = api.device("ELSEWHERE", domain=child)
    problem(api.call("POST", f"/domains/{child}/bulk-enrollments",
                     json={"enrollment_object_id": obj["id"],
                           "selection": {"device_ids": [other["id"], devices[0]["id"]]}}),
            404, "devices_not_found")


def test_a_hundred_thousand_copies_of_one_id_select_one_device_and_are_kept_as_a_summary(api):
    devices = fleet(api, 12)
    obj = api.enrollment_object("copies")
    path = f"/domains/{GLOBAL}/bulk-enrollments"
    copies = [devices[3]["id"]] * 100_000  # about 4 MB of JSON: over the general cap, within the bulk routes'
    batch = start(api, {"enrollment_object_id": obj["id"], "selection": {"device_ids": copies}})
    assert (batch["selected"], batch["total"]) == (1, 1)
    assert batch["selection"] == {"device_ids": [devices[3]["id"]], "device_count": 1}
    with Session(api.engine) as session:
        assert session.get(Batch, uuid.UUID(batch["id"])).selection == batch["selection"]
        assert len(session.exec(select(Job).where(Job.batch_id == uuid.UUID(batch["id"]))).all()) == 1

    # Many distinct ids: the count and the first ten, in the order sent, repeats dropped.
    other = api.enrollment_object("many")
    chosen = [d["id"] for d in reversed(devices)]
    many = start(api, {"enrollment_object_id": other["id"], "selection": {"device_ids": chosen + chosen}})
    assert many["selection"] == {"device_ids": chosen[:10], "device_count": 12}
    assert api.ok("GET", f"{path}/{many['id']}")["selection"] == many["selection"]
    assert [b["selection"] for b in api.ok("GET", path)["items"]] == [many["selection"], batch["selection"]]


def test_a_selection_of_more_distinct_ids_than_the_cap_is_refused(api):
    obj = api.enrollment_object("too-many")
    ids = [str(uuid.UUID(int=i + 1)) for i in range(100_001)]
    refused = problem(api.post(f"/domains/{GLOBAL}/bulk-enrollments",
                               {"enrollment_object_id": obj["id"], "selection": {"device_ids": ids}}),
                      422, "selection_too_large")
    assert "100001 distinct devices; at most 100000" in refused["detail"]


def test_progress_comes_from_the_jobs(api):
    fleet(api, 4)
    obj = api.enrollment_object("progress")
    batch = start(api, {"enrollment_object_id": obj["id"], "selection": {"all": True}})
    now = datetime.now(UTC)
    with Session(api.engine) as session:
        ids = [j.id for j in session.exec(select(Job).where(Job.batch_id == uuid.UUID(batch["id"]))).all()]
        session.execute(update(Job).where(Job.id == ids[0]).values(state="succeeded", finished_at=now))
        session.execute(update(Job).where(Job.id.in_(ids[1:3])).values(
            state="failed", finished_at=now, error_code="device_unreachable",
            error_message="device BULK001 unreachable after 5 attempts: connection refused"))
        session.commit()
    status = api.ok("GET", f"/domains/{GLOBAL}/bulk-enrollments/{batch['id']}")
    assert (status["succeeded"], status["failed"], status["queued"], status["finished"]) == (1, 2, 1, False)
    assert status["failures"] == [{"error_code": "device_unreachable", "count": 2,
                                   "example_message": "device BULK001 unreachable after 5 attempts: "
                                                      "connection refused"}]
    assert status["eta_seconds"] is not None and status["eta_seconds"] >= 0
    # Started 30 s ago with 3 of 4 jobs done: the last one should take about another 10 s.
    with Session(api.engine) as session:
        session.execute(update(Batch).where(Batch.id == uuid.UUID(batch["id"]))
                        .values(created_at=now - timedelta(seconds=30)))
        session.execute(update(Job).where(Job.id == ids[3]).values(state="running"))
        session.commit()
    status = api.ok("GET", f"/domains/{GLOBAL}/bulk-enrollments/{batch['id']}")
    assert (status["queued"], status["running"], status["finished"]) == (0, 1, False)
    assert 29 <= status["elapsed_seconds"] <= 35
    assert 9.5 <= status["eta_seconds"] <= 12
    with Session(api.engine) as session:
        session.execute(update(Job).where(Job.id == ids[3]).values(state="succeeded", finished_at=now))
        session.commit()
    status = api.ok("GET", f"/domains/{GLOBAL}/bulk-enrollments/{batch['id']}")
    assert status["finished"] is True and status["eta_seconds"] == 0
    listed = api.ok("GET", f"/domains/{GLOBAL}/bulk-enrollments")
    assert [b["id"] for b in listed["items"]] == [batch["id"]]


def test_read_only_cannot_start_one(api):
    fleet(api, 1)
    obj = api.enrollment_object("ro")
    response = api.call("POST", f"/domains/{GLOBAL}/bulk-enrollments", role="read_only",
                        json={"enrollment_object_id": obj["id"], "selection": {"all": True}})
    problem(response, 403, "forbidden")


def test_a_domain_s_selection_reaches_its_subdomains_and_nothing_outside(api):
    east = api.domain("East")
    branch = api.domain("East-Branch", parent=east)
    west = api.domain("West")
    inside = [api.device("SUB001", domain=east, name="edge-east"),
              api.device("SUB002", domain=branch, name="edge-branch")]
    api.device("SUB003", domain=west, name="edge-west")  # a sibling's device
    api.device("SUB004", name="edge-global")  # the parent's own device
    obj = api.enrollment_object("east-vpn", domain=east)

    for selection in ({"all": True}, {"name_pattern": "edge-*"}):
        queued(api.broker, BULK_QUEUE)
        with Session(api.engine) as session:  # start afresh: nobody has the trustpoint yet
            session.execute(Trustpoint.__table__.delete())
            session.execute(Job.__table__.delete())
            session.commit()
        batch = api.ok("POST", f"/domains/{east}/bulk-enrollments",
                       {"enrollment_object_id": obj["id"], "selection": selection}, status=202)
        assert batch["total"] == 2, selection
        with Session(api.engine) as session:
            device_ids = set(session.exec(select(Trustpoint.device_id)).all())
        assert device_ids == {uuid.UUID(d["id"]) for d in inside}, selection
