"""Renewal through the API: the enrollment object's renewal settings and their refusals, what a
trustpoint shows of its renewal, the schedules an operator reads and changes, and the metrics."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from services.controller.scheduling.scheduler import Scheduler
from shared.models import Trustpoint
from tests.integration.controller.api.test_api import metric
from tests.support.api import GLOBAL, make_settings, problem
from tests.support.clock import ManualClock


def test_renewal_settings_default_to_on_with_a_third_of_the_lifetime(api):
    obj = api.enrollment_object("vpn")
    assert (obj["auto_renew"], obj["renew_before_fraction"], obj["renew_before_days"]) == (True, None, None)
    days = api.enrollment_object("vpn-days", renew_before_days=30, validity_days=365)
    assert days["renew_before_days"] == 30
    off = api.enrollment_object("vpn-off", auto_renew=False, renew_before_fraction=0.25)
    assert (off["auto_renew"], off["renew_before_fraction"]) == (False, 0.25)


def test_a_renewal_window_longer_than_the_certificate_is_refused(api):
    path = f"/domains/{GLOBAL}/enrollment-objects"
    body = {"name": "vpn", "enrollment_type": "self_signed", "key_type": "ecdsa", "key_size": 256,
            "validity_days": 30}
    too_long = problem(api.post(path, {**body, "renew_before_days": 30}), 422, "renew_before_too_long")
    assert "renew_before_days=30" in too_long["detail"] and "30 days" in too_long["detail"]
    problem(api.post(path, {**body, "renew_before_days": 5, "renew_before_fraction": 0.5}), 422,
            "renew_before_ambiguous")
    assert api.post(path, {**body, "renew_before_fraction": 1.5}).status_code == 422


def test_a_trustpoint_shows_its_renewal_and_a_warning_only_where_an_operator_must_act(api):
    device = api.device("REN-1")
    est_like = api.enrollment_object("vpn")
    manual = api.enrollment_object("vpn-manual", enrollment_type="manual")
    tp = api.add(device["id"], est_like["id"])["trustpoint"]
    manual_tp = api.add(device["id"], manual["id"])["trustpoint"]
    past = datetime.now(UTC) - timedelta(hours=1)
    with Session(api.engine) as session:
        for tp_id in (tp["id"], manual_tp["id"]):
            row = session.get(Trustpoint, uuid.UUID(tp_id))
            row.renewal_due_at, row.renewal_failures, row.renewal_error_code = past, 1, "ca_unavailable"
            session.add(row)
        session.commit()

    shown = api.ok("GET", f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints/vpn")
    assert shown["renewal_due_at"] is not None and shown["renewal_failures"] == 1
    assert shown["renewal_error_code"] == "ca_unavailable"
    assert shown["renewal_warning"] is None  # certfleet renews it itself
    manual_shown = api.ok("GET", f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints/vpn-manual")
    assert manual_shown["renewal_warning"].startswith("renewal_due: the identity certificate is due for renewal")
    listed = api.ok("GET", f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints")["items"]
    assert {t["name"]: bool(t["renewal_warning"]) for t in listed} == {"vpn": False, "vpn-manual": True}

    text = api.client.get("/metrics").text
    assert metric(text, "certfleet_certificates_renewal_due", method="self_signed") == 1
    assert metric(text, "certfleet_certificates_renewal_due", method="manual") == 1
    assert metric(text, "certfleet_certificates_renewal_due", method="est") == 0


def test_schedules_are_read_by_any_role_and_changed_by_an_admin_only(api):
    listed = {s["name"]: s for s in api.ok("GET", "/schedules", role="read_only")}
    assert set(listed) == {"renewal", "ca-bundle-update", "ca-bundle-drift", "revocation-scan", "alert-conditions",
                           "device-health", "domain-deletions", "audit-retention"}
    assert (listed["renewal"]["timing"], listed["renewal"]["last_run_at"], listed["renewal"]["running"]) == (
        "every 60 s", None, False)
    assert listed["ca-bundle-update"]["timing"].startswith("cron ")
    problem(api.get("/schedules", role=None), 401, "unauthorized")

    # The scheduler runs it once; the API shows that run.
    clock = ManualClock()
    Scheduler(api.engine, api.broker, make_settings(api.engine), clock=clock, holder="test").tick()
    renewal = next(s for s in api.ok("GET", "/schedules") if s["name"] == "renewal")
    assert (renewal["last_outcome"], renewal["last_detail"]) == ("succeeded", "0 renewals published")
    assert renewal["last_run_at"].startswith("2030-01-01T12:00:00")
    text = api.client.get("/metrics").text
    assert metric(text, "certfleet_scheduler_last_run_timestamp_seconds", schedule="renewal") == clock().timestamp()

    problem(api.call("PUT", "/schedules/renewal", json={"interval_seconds": 300}, role="network_admin"), 403,
            "forbidden")
    changed = api.ok("PUT", "/schedules/renewal", {"cron": "*/5 * * * *"})
    assert changed["timing"] == "cron */5 * * * *"
    assert api.ok("PUT", "/schedules/renewal", {"enabled": False})["enabled"] is False


def test_a_bad_schedule_change_is_refused_with_a_code(api):
    def put(body, name="renewal"):
        return api.call("PUT", f"/schedules/{name}", json=body)

    bad = problem(put({"cron": "61 * * * *"}), 422, "cron_invalid")
    assert "five fields" in bad["detail"]
    problem(put({"cron": "0 3 * * *", "interval_seconds": 60}), 422, "schedule_timing_ambiguous")
    problem(put({"interval_seconds": 0}), 422, "schedule_interval_invalid")
    problem(put({"interval_seconds": 60}, name="coffee"), 404, "schedule_not_found")
    assert put({"every": "day"}).status_code == 422
    assert next(s for s in api.ok("GET", "/schedules") if s["name"] == "renewal")["timing"] == "every 60 s"


def test_an_admin_runs_a_schedule_now_and_its_timing_stays(api):
    clock = ManualClock()
    scheduler = Scheduler(api.engine, api.broker, make_settings(api.engine), clock=clock, holder="test")
    scheduler.tick()
    clock.advance(1)
    scheduler.tick()  # not due again for a minute: nothing runs
    first = next(s for s in api.ok("GET", "/schedules") if s["name"] == "renewal")
    assert first["last_run_at"].startswith("2030-01-01T12:00:00")

    problem(api.call("POST", "/schedules/renewal/run", role="network_admin"), 403, "forbidden")
    problem(api.call("POST", "/schedules/coffee/run"), 404, "schedule_not_found")
    asked = api.call("POST", "/schedules/renewal/run")
    assert asked.status_code == 202
    scheduler.tick()
    again = next(s for s in api.ok("GET", "/schedules") if s["name"] == "renewal")
    assert again["last_run_at"].startswith("2030-01-01T12:00:01")
    assert (again["timing"], again["last_outcome"]) == ("every 60 s", "succeeded")

    api.ok("PUT", "/schedules/renewal", {"enabled": False})
    problem(api.call("POST", "/schedules/renewal/run"), 409, "schedule_disabled")
