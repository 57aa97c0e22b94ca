"""The alerts API over real HTTP on a real database: a domain sees its subtree's alerts only,
filtered and paged, newest last_seen first; acknowledging records who, once; a sibling domain's
alert is not found, to read or to acknowledge; bad ids and filters are 422; and
certfleet_alerts_active shows every code and severity."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from services.controller.alerts import store
from shared.alerts import AlertCondition
from shared.enums import AlertCode, Severity
from shared.models import GLOBAL_DOMAIN_ID, AlertEvent
from tests.integration.controller.api.test_api import metric
from tests.support import alert_rows as rows
from tests.support.api import GLOBAL, problem
from tests.support.clock import START

ON_BOTH = pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


def raise_alerts(engine, conditions, *, minutes: int, codes=tuple(AlertCode)) -> None:
    with Session(engine) as session:
        store.sync(session, conditions, codes=codes, now=START + timedelta(minutes=minutes))
        session.commit()


@pytest.fixture
def fleet(api):
    """Global > Branch, Global > Other; alerts raised at distinct times (minutes), one cleared."""
    branch, other = uuid.UUID(api.domain("Branch")), uuid.UUID(api.domain("Other"))
    devices = {name: rows.device(api.engine, name, domain_id=domain) for name, domain in
               (("core", GLOBAL_DOMAIN_ID), ("edge", branch), ("edge-2", branch), ("far", other))}

    def keyring(name: str) -> AlertCondition:
        dev = devices[name]
        return AlertCondition(code=AlertCode.KEYRING_EXPIRED, description=f"keyring of {name}",
                              domain_id=dev.domain_id, device_id=dev.id, device_name=name)

    expiring = AlertCondition(code=AlertCode.CERTIFICATE_EXPIRING, description="vpn expires", severity=Severity.WARNING,
                              domain_id=branch, device_id=devices["edge"].id, device_name="edge",
                              trustpoint_id=uuid.uuid4(), trustpoint_name="vpn")
    renewal = AlertCondition(code=AlertCode.RENEWAL_FAILED, description="renewal failed", domain_id=branch,
                             device_id=devices["edge-2"].id, device_name="edge-2")
    raise_alerts(api.engine, [renewal], minutes=0)
    raise_alerts(api.engine, [], minutes=1, codes=[AlertCode.RENEWAL_FAILED])  # cleared
    raise_alerts(api.engine, [keyring("core")], minutes=2, codes=[AlertCode.KEYRING_EXPIRED])
    raise_alerts(api.engine, [keyring("core"), keyring("edge"), keyring("far")], minutes=3,
                 codes=[AlertCode.KEYRING_EXPIRED])
    raise_alerts(api.engine, [expiring], minutes=4, codes=[AlertCode.CERTIFICATE_EXPIRING])
    listed = api.ok("GET", f"/domains/{GLOBAL}/alerts?state=open")["items"]
    by_about = {(a["device_name"], a["code"]): a["id"] for a in listed}
    return {"branch": str(branch), "other": str(other), "devices": devices, "ids": by_about,
            "cleared": api.ok("GET", f"/domains/{GLOBAL}/alerts?state=cleared")["items"][0]["id"]}


def about(page: dict) -> list[tuple[str, str]]:
    return [(a["device_name"], a["code"]) for a in page["items"]]


@ON_BOTH
def test_a_domain_lists_its_subtree_s_alerts_newest_first(api, fleet):
    branch = api.ok("GET", f"/domains/{fleet['branch']}/alerts", role="read_only")
    assert about(branch) == [("edge", "CF-CERT-EXPIRING"), ("edge", "F0853"), ("edge-2", "CF-RENEW-FAILED")]
    assert branch["total"] == 3
    everything = api.ok("GET", f"/domains/{GLOBAL}/alerts")
    # core's F0853 was raised at minute 2 and seen again at 3, with edge's and far's.
    assert about(everything)[0] == ("edge", "CF-CERT-EXPIRING") and everything["total"] == 5
    assert {a["last_seen"][:16] for a in everything["items"][1:4]} == {"2030-01-01T12:03"}
    first = everything["items"][0]
    assert (first["title"], first["severity"], first["state"], first["trustpoint_name"], first["first_seen"]) == (
        "identity certificate expiring", "warning", "active", "vpn", "2030-01-01T12:04:00Z")


def test_filters_and_paging(api, fleet):
    path = f"/domains/{GLOBAL}/alerts"
    assert about(api.ok("GET", f"{path}?state=cleared")) == [("edge-2", "CF-RENEW-FAILED")]
    assert api.ok("GET", f"{path}?state=open")["total"] == 4
    assert api.ok("GET", f"{path}?state=active")["total"] == 4
    assert api.ok("GET", f"{path}?state=acknowledged")["total"] == 0
    assert {d for d, _ in about(api.ok("GET", f"{path}?code=F0853"))} == {"core", "edge", "far"}
    assert about(api.ok("GET", f"{path}?severity=warning")) == [("edge", "CF-CERT-EXPIRING")]
    edge = fleet["devices"]["edge"].id
    assert about(api.ok("GET", f"{path}?device_id={edge}&code=F0853")) == [("edge", "F0853")]
    whole = about(api.ok("GET", f"{path}?limit=100"))
    page = api.ok("GET", f"{path}?offset=1&limit=2")
    assert about(page) == whole[1:3] and (page["total"], page["offset"], page["limit"]) == (5, 1, 2)
    for bad in ("state=closed", "code=F9999", "severity=fatal", "device_id=edge", "limit=0", "limit=5000"):
        problem(api.get(f"{path}?{bad}"), 422, "validation_error")


def test_reading_one_alert_from_its_domain_or_an_ancestor_only(api, fleet):
    far = fleet["ids"][("far", "F0853")]
    assert api.ok("GET", f"/domains/{fleet['other']}/alerts/{far}", role="read_only")["device_name"] == "far"
    assert api.ok("GET", f"/domains/{GLOBAL}/alerts/{far}")["id"] == far
    hidden = problem(api.get(f"/domains/{fleet['branch']}/alerts/{far}"), 404, "alert_not_found")
    assert far in hidden["detail"]
    problem(api.get(f"/domains/{fleet['branch']}/alerts/{uuid.uuid4()}"), 404, "alert_not_found")
    for bad in ("not-an-id", "123", "%20"):
        problem(api.get(f"/domains/{fleet['branch']}/alerts/{bad}"), 422, "validation_error")
    problem(api.get(f"/domains/{uuid.uuid4()}/alerts"), 404, "not_found")
    problem(api.get(f"/domains/{GLOBAL}/alerts", role=None), 401, "unauthorized")


def acknowledged_events(engine, alert_id: str) -> int:
    with Session(engine) as session:
        return len(session.exec(select(AlertEvent).where(AlertEvent.alert_id == uuid.UUID(alert_id),
                                                          AlertEvent.type == "io.certfleet.alert.acknowledged")).all())


@ON_BOTH
def test_acknowledging_records_who_once_and_only_writers_in_the_alert_s_domains_may(api, fleet):
    edge = fleet["ids"][("edge", "F0853")]
    path = f"/domains/{fleet['branch']}/alerts/{edge}/acknowledge"
    problem(api.post(path, role="read_only"), 403, "forbidden")
    problem(api.post(f"/domains/{fleet['other']}/alerts/{edge}/acknowledge"), 404, "alert_not_found")
    assert api.ok("GET", f"/domains/{GLOBAL}/alerts/{edge}")["state"] == "active"

    done = api.ok("POST", path, role="network_admin")
    assert (done["state"], done["acknowledged_by"]) == ("acknowledged", "test network_admin (network_admin)")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", done["acknowledged_at"])
    again = api.ok("POST", f"/domains/{GLOBAL}/alerts/{edge}/acknowledge", role="admin")
    assert (again["acknowledged_by"], again["acknowledged_at"]) == (done["acknowledged_by"], done["acknowledged_at"])
    assert acknowledged_events(api.engine, edge) == 1
    assert about(api.ok("GET", f"/domains/{GLOBAL}/alerts?state=acknowledged")) == [("edge", "F0853")]

    cleared = problem(api.post(f"/domains/{fleet['branch']}/alerts/{fleet['cleared']}/acknowledge"), 409,
                      "alert_cleared")
    assert "nothing to acknowledge" in cleared["detail"]
    problem(api.post(f"/domains/{fleet['branch']}/alerts/{uuid.uuid4()}/acknowledge"), 404, "alert_not_found")
    problem(api.post(f"/domains/{fleet['branch']}/alerts/nope/acknowledge"), 422, "validation_error")


def test_the_summary_counts_open_alerts_of_the_subtree(api, fleet):
    api.ok("POST", f"/domains/{GLOBAL}/alerts/{fleet['ids'][('edge', 'F0853')]}/acknowledge")
    branch = api.ok("GET", f"/domains/{fleet['branch']}/alerts/summary", role="read_only")
    assert (branch["total"], branch["by_state"]) == (2, {"active": 1, "acknowledged": 1})
    assert branch["by_code"] == {code.value: {"F0853": 1, "CF-CERT-EXPIRING": 1}.get(code.value, 0)
                                 for code in AlertCode}
    assert branch["by_severity"] == {"critical": 0, "major": 1, "minor": 0, "warning": 1}
    everywhere = api.ok("GET", f"/domains/{GLOBAL}/alerts/summary")
    assert everywhere["by_code_and_severity"] == [{"code": "F0853", "severity": "major", "count": 3},
                                                  {"code": "CF-CERT-EXPIRING", "severity": "warning", "count": 1}]


def test_the_metric_has_every_code_and_severity_and_counts_open_alerts(api, fleet):
    text = api.client.get("/metrics").text
    series = re.findall(r'^certfleet_alerts_active\{code="([^"]+)",severity="([^"]+)"\} (\S+)$', text, re.M)
    assert len(series) == len(AlertCode) * len(Severity) == 36
    assert {(c, s) for c, s, _ in series} == {(c.value, s.value) for c in AlertCode for s in Severity}
    assert metric(text, "certfleet_alerts_active", code="F0853", severity="major") == 3
    assert metric(text, "certfleet_alerts_active", code="CF-CERT-EXPIRING", severity="warning") == 1
    assert metric(text, "certfleet_alerts_active", code="CF-RENEW-FAILED", severity="major") == 0  # cleared
    assert sum(float(v) for _, _, v in series) == 4
