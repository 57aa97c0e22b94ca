"""The webhook API as an operator's client sees it (real HTTP through FastAPI's TestClient, a real
database): a domain sees its own and its subdomains' webhooks and never a sibling's, bad input
gets a 422 with a stable code, and the secret, sealed at rest, never comes back in an answer, a
log line or a repr."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlmodel import Session, select
from structlog.testing import capture_logs

from services.controller.api.schemas.webhooks import WebhookCreate
from shared.models import Webhook, WebhookDelivery
from shared.secrets import SecretBox
from tests.support.api import GLOBAL, SECRET_KEY, problem

SECRET = "s3cret-for-the-webhook-api-test"
URL = "https://alerts.example.com/certfleet"


def hooks(domain: str) -> str:
    return f"/domains/{domain}/webhooks"


def add(api, domain: str = GLOBAL, **fields) -> dict:
    return api.ok("POST", hooks(domain), {"url": URL, "secret": SECRET, **fields}, status=201)


def test_a_webhook_is_made_with_its_filters_and_its_secret_is_sealed_and_never_shown(api):
    with capture_logs() as logs:
        made = add(api, name="pager", codes=["F0853", "CF-CERT-REVOKED"], severities=["critical"])
        listed = api.ok("GET", hooks(GLOBAL))
        fetched = api.ok("GET", f"{hooks(GLOBAL)}/{made['id']}")
    assert (made["name"], made["url"], made["codes"], made["severities"], made["enabled"]) == (
        "pager", URL, ["CF-CERT-REVOKED", "F0853"], ["critical"], True)
    assert (made["pending"], made["dead"]) == (0, 0)
    assert made["created_by"] == "test admin (admin)"
    assert listed["items"] == [made] and fetched == made
    for answer in (made, listed, fetched):
        assert SECRET not in json.dumps(answer) and "secret" not in json.dumps(answer)
    assert SECRET not in json.dumps(logs, default=str)
    with Session(api.engine) as session:
        row = session.get(Webhook, uuid.UUID(made["id"]))
        assert SECRET.encode() not in row.secret_blob
        assert SecretBox(SECRET_KEY).open(row.secret_blob).decode() == SECRET
        assert SECRET not in repr(row)
    assert SECRET not in repr(WebhookCreate(url=URL, secret=SECRET)) + str(WebhookCreate(url=URL, secret=SECRET))


@pytest.mark.parametrize(("body", "code"), [
    ({"url": "ftp://alerts.example.com/x"}, "webhook_url_invalid"),
    ({"url": "https://"}, "webhook_url_invalid"),
    ({"url": "alerts.example.com/hook"}, "webhook_url_invalid"),
    ({"url": "http://exa mple.com/hook"}, "webhook_url_invalid"),
    ({"url": "https://user:pw@alerts.example.com/"}, "url_credentials_not_allowed"),
    ({"codes": ["F9999"]}, "validation_error"),
    ({"severities": ["catastrophic"]}, "validation_error"),
    ({"secret": "short-secret"}, "webhook_secret_too_short"),
    ({"secret": "x" * 257}, "validation_error"),
    ({"secret": None}, "validation_error"),
    ({"colour": "red"}, "validation_error"),
])
def test_bad_input_is_refused_with_a_stable_code_and_without_echoing_the_secret(api, body, code):
    request = {"url": URL, "secret": SECRET, **body}
    with capture_logs() as logs:
        answer = problem(api.call("POST", hooks(GLOBAL), json=request), 422, code)
    secret = request["secret"] or SECRET
    assert secret not in json.dumps(answer) and secret not in json.dumps(logs, default=str)
    if code == "webhook_secret_too_short":
        assert "at least 16" in answer["detail"]
    with Session(api.engine) as session:
        assert session.exec(select(Webhook)).all() == []


def test_a_domain_sees_its_own_and_its_subdomains_webhooks_never_a_siblings(api):
    east = api.domain("East")
    lab = api.domain("East Lab", parent=east)
    west = api.domain("West")
    made = {name: add(api, domain, name=name)["id"]
            for name, domain in (("global", GLOBAL), ("east", east), ("lab", lab), ("west", west))}

    def names(domain: str) -> set[str]:
        return {w["name"] for w in api.ok("GET", hooks(domain))["items"]}

    assert names(GLOBAL) == {"global", "east", "lab", "west"}
    assert names(east) == {"east", "lab"}
    assert names(lab) == {"lab"}
    assert names(west) == {"west"}
    assert api.ok("GET", f"{hooks(east)}/{made['lab']}")["name"] == "lab"
    # A sibling's or an ancestor's webhook does not exist as far as West or East Lab can tell.
    for domain, other in ((west, "east"), (west, "lab"), (lab, "east"), (east, "global")):
        for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/deliveries")):
            problem(api.call(method, f"{hooks(domain)}/{made[other]}{suffix}"), 404, "webhook_not_found")
    problem(api.call("GET", f"{hooks(str(uuid.uuid4()))}"), 404, "not_found")

    # Every role reads; only admins add or delete.
    assert names(east) == {w["name"] for w in api.ok("GET", hooks(east), role="read_only")["items"]}
    problem(api.call("POST", hooks(east), role="read_only", json={"url": URL, "secret": SECRET}), 403, "forbidden")
    problem(api.call("DELETE", f"{hooks(east)}/{made['lab']}", role="read_only"), 403, "forbidden")
    problem(api.call("DELETE", f"{hooks(east)}/{made['lab']}", role="network_admin"), 403, "forbidden")
    assert api.call("DELETE", f"{hooks(east)}/{made['lab']}", role="admin").status_code == 204
    assert names(GLOBAL) == {"global", "east", "west"}


def test_the_delivery_log_pages_filters_and_only_a_dead_delivery_is_retried(api):
    made = add(api)
    webhook_id = uuid.UUID(made["id"])
    rows = [WebhookDelivery(webhook_id=webhook_id, event_id=uuid.uuid4(), event_seq=n, alert_id=uuid.uuid4(),
                            event_type="io.certfleet.alert.raised", state=state, attempts=attempts,
                            last_status=status, last_error=error)
            for n, (state, attempts, status, error) in enumerate([
                ("delivered", 1, 204, ""), ("dead", 3, 500, "HTTP 500 Internal Server Error"),
                ("pending", 1, None, "no answer within 5 s (ReadTimeout)")])]
    with Session(api.engine) as session:
        session.add_all(rows)
        session.commit()
    log = f"{hooks(GLOBAL)}/{made['id']}/deliveries"
    everything = api.ok("GET", log)
    assert everything["total"] == 3
    assert [d["state"] for d in everything["items"]] == [
        "pending", "dead", "delivered"]  # newest first
    dead = api.ok("GET", log, params={"state": "dead"})["items"]
    assert [(d["attempts"], d["last_status"], d["last_error"]) for d in dead] == [
        (3, 500, "HTTP 500 Internal Server Error")]
    assert api.ok("GET", log, params={"limit": 1, "offset": 1})["items"][0]["state"] == "dead"
    problem(api.call("GET", log, params={"state": "lost"}), 422, "validation_error")
    assert api.ok("GET", f"{hooks(GLOBAL)}/{made['id']}")["pending"] == 1

    pending = api.ok("GET", log, params={"state": "pending"})["items"][0]
    problem(api.call("POST", f"{log}/{pending['id']}/retry"), 409, "delivery_not_dead")
    problem(api.call("POST", f"{log}/{uuid.uuid4()}/retry"), 404, "delivery_not_found")
    problem(api.call("POST", f"{log}/{dead[0]['id']}/retry", role="read_only"), 403, "forbidden")
    retried = api.ok("POST", f"{log}/{dead[0]['id']}/retry")
    assert (retried["state"], retried["attempts"]) == ("pending", 0)
    assert api.ok("GET", f"{hooks(GLOBAL)}/{made['id']}")["dead"] == 0

    # Deleting the webhook deletes its log.
    assert api.call("DELETE", f"{hooks(GLOBAL)}/{made['id']}").status_code == 204
    problem(api.call("GET", log), 404, "webhook_not_found")
    with Session(api.engine) as session:
        assert session.exec(select(WebhookDelivery)).all() == []
