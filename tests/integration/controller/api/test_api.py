"""The controller's REST API as an operator's client sees it: real HTTP through FastAPI's
TestClient, a real database (SQLite; PostgreSQL where marked), the in-process broker."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlmodel import Session, select
from structlog.testing import capture_logs

from shared.broker import make_broker
from shared.events import JOBS_QUEUE
from shared.models import Certificate, EnrollmentObject, Job, Trustpoint
from shared.secrets import SecretBox
from shared.settings import Settings
from shared.states import Status, transition
from tests.support.api import (
    GLOBAL,
    SECRET_KEY,
    V1,
    Api,
    finish_jobs,
    install_certificate,
    problem,
    published,
    start_api,
)
from tests.support.clock import ManualClock


def test_health_metrics_and_openapi_need_no_token(api):
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/metrics").status_code == 200
    spec = api.client.get("/openapi.json").json()
    assert f"{V1}/domains/{{domain_id}}/devices/{{device_id}}/trustpoints" in spec["paths"]


def test_tokens_and_roles(api):
    missing = problem(api.get("/domains", role=None), 401, "unauthorized")
    assert "Bearer" in missing["detail"]
    assert api.get("/domains", role=None).headers["www-authenticate"] == "Bearer"
    problem(
        api.get("/domains", role=None, headers={"Authorization": "Bearer not-a-token"}), 401, "unauthorized"
    )
    problem(
        api.get("/domains", role=None, headers={"Authorization": "Basic dXNlcjpwdw=="}), 401, "unauthorized"
    )

    assert api.get("/domains", role="read_only").status_code == 200
    refused = problem(api.post("/domains", {"name": "ro"}, role="read_only"), 403, "forbidden")
    assert "read_only" in refused["detail"]
    assert api.post("/domains", {"name": "by-admin"}, role="admin").status_code == 201
    # Domains are an admin's: a network admin is told which role it needs.
    refused = problem(api.post("/domains", {"name": "by-netadmin"}, role="network_admin"), 403, "forbidden")
    assert "network_admin" in refused["detail"] and "needs role admin" in refused["detail"]
    # A read-only token still reads what others wrote.
    names = {d["name"] for d in api.get("/domains", role="read_only").json()["items"]}
    assert {"Global", "by-admin"} <= names


def test_unknown_route_and_unexpected_errors_are_problems(api):
    problem(api.client.get("/no/such/path"), 404, "not_found")
    problem(api.get("/domains/not-a-uuid"), 422, "validation_error")
    problem(api.get(f"/domains/{uuid.uuid4()}"), 404, "not_found")

    def boom():
        raise RuntimeError("internal detail: /secret/path password=hunter2")

    api.client.app.add_api_route("/boom", boom)
    with capture_logs() as logs:
        body = problem(api.client.get("/boom"), 500, "internal_error")
    assert "hunter2" not in json.dumps(body) and "RuntimeError" not in json.dumps(body)
    assert any(entry["event"] == "unexpected error" for entry in logs)


# --- domains and devices -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_devices_are_registered_listed_changed_and_unique_by_serial(api):
    emea = api.domain("EMEA")
    created = api.device("FTD-0001", domain=emea)
    assert created["domain_id"] == emea and created["weak_crypto"] is False
    for i in range(2, 6):
        api.device(f"FTD-000{i}", domain=emea)
    clash = problem(
        api.post(
            f"/domains/{GLOBAL}/devices",
            {"name": "again", "serial": "FTD-0001", "management_url": "http://127.0.0.1:1/"},
        ),
        409,
        "duplicate_serial",
    )
    assert "FTD-0001" in clash["detail"]

    page = api.ok("GET", f"/domains/{emea}/devices?offset=1&limit=2")
    assert (page["total"], page["offset"], page["limit"], len(page["items"])) == (5, 1, 2, 2)
    renamed = api.ok(
        "PATCH", f"/domains/{emea}/devices/{created['id']}", {"name": "edge-1", "model": "FTD 4215"}
    )
    assert (renamed["name"], renamed["model"]) == ("edge-1", "FTD 4215")
    assert api.ok("GET", f"/domains/{emea}/devices/{created['id']}")["name"] == "edge-1"
    problem(api.get(f"/domains/{emea}/devices?limit=1001"), 422, "validation_error")


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("management_url", "ftp://127.0.0.1/", "invalid_url"),
        ("management_url", "http://2001:db8::1/api", "invalid_url"),
        ("ip_address", "300.1.1.1", "invalid_ip_address"),
        ("fqdn", "bad host!", "invalid_fqdn"),
    ],
)
def test_device_fields_are_checked(api, field, value, code):
    body = {"name": "x", "serial": "S-1", "management_url": "http://127.0.0.1:8400/", field: value}
    problem(api.post(f"/domains/{GLOBAL}/devices", body), 422, code)


def test_parent_sees_child_devices_and_siblings_see_nothing(api):
    east, west = api.domain("East"), api.domain("West")
    leaf = api.domain("East-Leaf", parent=east)
    device = api.device("LEAF-1", domain=leaf)
    for domain in (GLOBAL, east, leaf):
        assert api.ok("GET", f"/domains/{domain}/devices/{device['id']}")["serial"] == "LEAF-1"
        assert api.ok("GET", f"/domains/{domain}/devices")["total"] == 1
    # From the sibling, the device does not exist: same answer as an unknown id.
    hidden = problem(api.get(f"/domains/{west}/devices/{device['id']}"), 404, "not_found")
    unknown_id = str(uuid.uuid4())
    unknown = problem(api.get(f"/domains/{west}/devices/{unknown_id}"), 404, "not_found")
    assert hidden["detail"].replace(device["id"], "ID") == unknown["detail"].replace(unknown_id, "ID")
    assert api.ok("GET", f"/domains/{west}/devices")["total"] == 0
    problem(
        api.call("PATCH", f"/domains/{west}/devices/{device['id']}", json={"name": "x"}), 404, "not_found"
    )
    problem(api.call("DELETE", f"/domains/{west}/devices/{device['id']}"), 404, "not_found")

    # Enrollments made in the leaf are visible to the parent, not to the sibling.
    obj = api.enrollment_object("leaf-vpn", domain=leaf)
    accepted = api.add(device["id"], obj["id"], domain=leaf)
    assert api.ok("GET", f"/domains/{east}/trustpoints")["total"] == 1
    assert api.ok("GET", f"/domains/{GLOBAL}/trustpoints")["total"] == 1
    assert api.ok("GET", f"/domains/{west}/trustpoints")["total"] == 0
    problem(api.get(f"/domains/{west}/jobs/{accepted['job']['id']}"), 404, "not_found")
    assert api.ok("GET", f"/domains/{east}/jobs/{accepted['job']['id']}")["kind"] == "enroll"
    # A sibling's enrollment object cannot be used, nor seen.
    problem(api.get(f"/domains/{west}/enrollment-objects/{obj['id']}"), 404, "not_found")
    other = api.device("EAST-2", domain=east)
    problem(
        api.post(f"/domains/{east}/devices/{other['id']}/trustpoints", {"enrollment_object_id": obj["id"]}),
        404,
        "not_found",
    )


def test_moving_a_device_moves_its_trustpoints(api):
    a, b = api.domain("A"), api.domain("B")
    device = api.device("MOVE-1", domain=a)
    api.add(device["id"], api.enrollment_object("global-vpn")["id"])
    moved = api.ok("PATCH", f"/domains/{GLOBAL}/devices/{device['id']}", {"domain_id": b})
    assert moved["domain_id"] == b
    assert api.ok("GET", f"/domains/{b}/trustpoints")["total"] == 1
    assert api.ok("GET", f"/domains/{a}/trustpoints")["total"] == 0
    # A domain cannot move a device out of its own subtree.
    problem(
        api.call("PATCH", f"/domains/{b}/devices/{device['id']}", json={"domain_id": a}), 404, "not_found"
    )


def test_weak_crypto_needs_confirmation(api):
    device = api.device("WEAK-1")
    path = f"/domains/{GLOBAL}/devices/{device['id']}"
    warning = problem(
        api.call("PATCH", path, json={"weak_crypto": True}), 409, "weak_crypto_confirmation_required"
    )
    assert (
        "weak ciphers" in warning["detail"]
        and "reduces" in warning["detail"]
        and "confirm" in warning["detail"]
    )
    assert api.ok("GET", path)["weak_crypto"] is False
    assert api.ok("PATCH", path, {"weak_crypto": True, "confirm": True})["weak_crypto"] is True
    assert api.ok("PATCH", path, {"weak_crypto": False})["weak_crypto"] is False


def test_deleting_a_device_waits_for_its_jobs_then_removes_its_certificates(api):
    device = api.device("DEL-1")
    accepted = api.add(device["id"], api.enrollment_object("vpn")["id"])
    install_certificate(api.engine, accepted["trustpoint"]["id"], expires_in_days=30)
    path = f"/domains/{GLOBAL}/devices/{device['id']}"
    busy = problem(api.call("DELETE", path), 409, "job_in_progress")
    assert busy["job_id"] == accepted["job"]["id"]
    finish_jobs(api.engine)
    assert api.call("DELETE", path).status_code == 204
    problem(api.get(path), 404, "not_found")
    with Session(api.engine) as session:
        assert session.exec(select(Trustpoint)).all() == []
        assert session.exec(select(Certificate)).all() == []
        assert len(session.exec(select(Job)).all()) == 1  # the record of what happened stays


# --- enrollment objects ------------------------------------------------------------------------

ENROLLMENT_OBJECTS = {
    "self_signed": {
        "enrollment_type": "self_signed",
        "key_type": "ecdsa",
        "key_size": 256,
        "common_name": "vpn",
        "organization": "Example",
        "country": "US",
        "include_fqdn": True,
        "validity_days": 730,
    },
    "est": {
        "enrollment_type": "est",
        "enrollment_url": "https://[2001:db8::5]:8443/",
        "username": "fw",
        "password": "est-Pa55word!",
        "fingerprint": "AB:" * 31 + "AB",
        "key_type": "rsa",
        "key_size": 2048,
    },
    "scep": {
        "enrollment_type": "scep",
        "enrollment_url": "http://ca.example.com/certsrv/mscep/mscep.dll",
        "challenge_password": "scep-Ch4llenge!",
        "retry_period_minutes": 5,
        "retry_count": 20,
        "ocsp_url": "http://[2001:db8::7]/ocsp",
        "crl_urls": ["http://[2001:db8::7]/ca.crl"],
    },
    "manual": {"enrollment_type": "manual", "ca_only": False, "key_type": "eddsa", "key_size": 256},
    "pkcs12": {"enrollment_type": "pkcs12"},
}


@pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_every_enrollment_type_round_trips_and_secrets_never_come_back(api):
    secrets = ["est-Pa55word!", "scep-Ch4llenge!"]
    answers = []
    with capture_logs() as logs:
        for kind, fields in ENROLLMENT_OBJECTS.items():
            created = api.enrollment_object(f"obj-{kind}", **fields)
            answers.append(created)
            assert created["enrollment_type"] == kind
            assert created["has_secret"] is (kind in ("est", "scep"))
            assert "password" not in created and "challenge_password" not in created
            answers.append(api.ok("GET", f"/domains/{GLOBAL}/enrollment-objects/{created['id']}"))
        listing = api.ok("GET", f"/domains/{GLOBAL}/enrollment-objects")
        answers.append(listing)
        est = next(o for o in listing["items"] if o["enrollment_type"] == "est")
        assert est["enrollment_url"] == "https://[2001:db8::5]:8443/" and est["fingerprint"] == "ab" * 32
        device = api.device("SECRET-1")
        answers.append(api.add(device["id"], est["id"]))
    everything = (
        json.dumps(answers) + json.dumps(logs) + "".join(m.encode().decode() for m in published(api.broker))
    )
    for secret in secrets:
        assert secret not in everything
    # Stored, encrypted, and readable with the server's key.
    with Session(api.engine) as session:
        blob = session.exec(
            select(EnrollmentObject.secret_blob).where(EnrollmentObject.name == "obj-est")
        ).one()
    assert b"est-Pa55word!" not in blob
    assert SecretBox(SECRET_KEY).open(blob) == b"est-Pa55word!"


@pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_the_longest_field_values_the_api_accepts_fit_the_table(api):
    """The API and the table share one definition of each field: what passes the one is stored."""
    longest = {
        "enrollment_type": "est", "enrollment_url": "https://ca.example.com/" + "e" * 489,
        "fingerprint": "AB:" * 63 + "AB",  # SHA-512 with colons: 191 characters
        "description": "d" * 1024, "username": "u" * 128, "common_name": "c" * 64, "organization": "o" * 64,
        "organizational_unit": "t" * 64, "locality": "l" * 128, "state": "s" * 128,
        "ocsp_url": "http://ocsp.example.com/" + "o" * 488,
    }
    created = api.enrollment_object("o" * 64, key_type="rsa", key_size=2048, **longest)
    stored = api.ok("GET", f"/domains/{GLOBAL}/enrollment-objects/{created['id']}")
    assert stored["fingerprint"] == "ab" * 64
    assert {k: stored[k] for k in longest if k != "fingerprint"} == {k: v for k, v in longest.items()
                                                                      if k != "fingerprint"}


def test_put_replaces_fields_and_keeps_or_clears_the_secret(api):
    created = api.enrollment_object("est-obj", **ENROLLMENT_OBJECTS["est"])
    path = f"/domains/{GLOBAL}/enrollment-objects/{created['id']}"
    body = {k: v for k, v in ENROLLMENT_OBJECTS["est"].items() if k != "password"}
    kept = api.ok("PUT", path, {"name": "est-obj", **body, "key_size": 4096})
    assert kept["key_size"] == 4096 and kept["has_secret"] is True
    cleared = api.ok("PUT", path, {"name": "est-obj", **body, "password": ""})
    assert cleared["has_secret"] is False
    renamed = api.ok("PUT", path, {"name": "est-renamed", **body, "password": "new-secret"})
    assert renamed["name"] == "est-renamed" and renamed["has_secret"] is True


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"key_type": "rsa", "key_size": 1000}, "invalid_key_size"),
        ({"key_type": "ecdsa", "key_size": 2048}, "invalid_key_size"),
        ({"key_type": "dsa"}, "validation_error"),
        ({"country": "USA"}, "validation_error"),  # longer than the column: refused by the model
        ({"country": "us"}, "invalid_country"),
        ({"email": "not-an-email"}, "invalid_email"),
        ({"validity_days": 0}, "invalid_validity"),
        ({"name": "bad name!"}, "invalid_name"),
        ({"enrollment_type": "est"}, "enrollment_url_required"),
        ({"enrollment_type": "est", "enrollment_url": "https://2001:db8::5/"}, "invalid_url"),
        ({"enrollment_type": "scep", "enrollment_url": "ldap://ca.example.com/"}, "invalid_url"),
        ({"enrollment_type": "est", "enrollment_url": "http://ca.example.com/"}, "est_url_not_https"),
        ({"enrollment_type": "scep", "enrollment_url": "https://ca.example.com/"}, "scep_url_not_http"),
        (
            {"enrollment_type": "scep", "enrollment_url": "http://ca/", "retry_period_minutes": 61},
            "invalid_retry_period",
        ),
        (
            {"enrollment_type": "scep", "enrollment_url": "http://ca/", "retry_count": 101},
            "invalid_retry_count",
        ),
        (
            {"enrollment_type": "est", "enrollment_url": "https://ca/", "fingerprint": "xyz"},
            "invalid_fingerprint",
        ),
        ({"enrollment_type": "self_signed", "password": "p"}, "field_not_applicable"),
        ({"enrollment_type": "manual", "ca_only": True}, "ca_certificate_required"),
        ({"enrollment_type": "manual", "ca_certificate_pem": "garbage"}, "invalid_certificate"),
        ({"ocsp_url": "http://[2001:db8::7/ocsp"}, "invalid_url"),
        ({"surprise": 1}, "validation_error"),
        ({"enrollment_type": "est", "enrollment_url": "https://ca/", "fingerprint": "ab:" * 67 + "ab"},
         "validation_error"),  # longer than SHA-512 written with colons
        ({"key_size": "big"}, "validation_error"),
        ({"enrollment_type": "carrier_pigeon"}, "validation_error"),
    ],
)
def test_enrollment_object_validation(api, fields, code):
    body = {"name": "obj", "enrollment_type": "self_signed", **fields}
    answer = problem(api.post(f"/domains/{GLOBAL}/enrollment-objects", body), 422, code)
    if code == "validation_error":
        assert answer["errors"] and {"loc", "msg"} == set(answer["errors"][0])


def test_an_est_object_carries_its_own_ca_limits_and_others_refuse_them(api):
    path = f"/domains/{GLOBAL}/enrollment-objects"
    est = dict(name="vpn-est", enrollment_type="est", enrollment_url="https://ca.example.com/",
               key_type="ecdsa", key_size=256)
    created = api.ok("POST", path, {**est, "ca_concurrency_limit": 8, "ca_rate_limit": 2.5}, status=201)
    assert (created["ca_concurrency_limit"], created["ca_rate_limit"]) == (8, 2.5)
    assert api.ok("GET", f"{path}/{created['id']}")["ca_rate_limit"] == 2.5
    default = api.ok("POST", path, {**est, "name": "vpn-est-2"}, status=201)
    assert (default["ca_concurrency_limit"], default["ca_rate_limit"]) == (None, None)
    for bad in ({"ca_rate_limit": 0}, {"ca_concurrency_limit": 0}, {"ca_rate_limit": -1}):
        problem(api.call("POST", path, json={**est, "name": "bad", **bad}), 422, "validation_error")
    refused = problem(api.call("POST", path, json={"name": "self", "enrollment_type": "self_signed",
                                                   "key_type": "ecdsa", "key_size": 256, "ca_rate_limit": 5}),
                      422, "field_not_applicable")
    assert "ca_rate_limit applies to EST and SCEP" in refused["detail"]


def test_malformed_json_and_wrong_types_are_client_errors(api):
    path = f"{V1}/domains/{GLOBAL}/enrollment-objects"
    headers = {"Authorization": f"Bearer {api.tokens['admin']}", "Content-Type": "application/json"}
    problem(api.client.post(path, content=b'{"name": "x",', headers=headers), 422, "validation_error")
    problem(api.client.post(path, content=b"[1, 2]", headers=headers), 422, "validation_error")
    problem(api.client.post(path, content=b"", headers=headers), 422, "validation_error")
    problem(
        api.post(f"/domains/{GLOBAL}/devices", {"name": 5, "serial": [], "management_url": None}),
        422,
        "validation_error",
    )


def test_objects_are_unique_per_domain_inherited_by_children_and_kept_while_used(api):
    child = api.domain("Child")
    parent_obj = api.enrollment_object("shared-vpn")
    problem(
        api.post(
            f"/domains/{GLOBAL}/enrollment-objects", {"name": "shared-vpn", "enrollment_type": "self_signed"}
        ),
        409,
        "duplicate_name",
    )
    api.enrollment_object("shared-vpn", domain=child)  # the same name in another domain is fine
    listed = api.ok("GET", f"/domains/{child}/enrollment-objects")
    assert listed["total"] == 2
    # The child may use the parent's object, not change it.
    problem(
        api.call("DELETE", f"/domains/{child}/enrollment-objects/{parent_obj['id']}"), 403, "inherited_object"
    )
    device = api.device("USE-1", domain=child)
    api.add(device["id"], parent_obj["id"], domain=child)
    in_use = problem(
        api.call("DELETE", f"/domains/{GLOBAL}/enrollment-objects/{parent_obj['id']}"), 409, "object_in_use"
    )
    assert "1 trustpoint" in in_use["detail"]
    unused = api.enrollment_object("unused")
    assert api.call("DELETE", f"/domains/{GLOBAL}/enrollment-objects/{unused['id']}").status_code == 204


# --- trustpoints and jobs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_add_stores_the_intent_and_publishes_only_the_job_id(api):
    device = api.device("ADD-1")
    obj = api.enrollment_object("vpn-ecdsa")
    response = api.post(
        f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints", {"enrollment_object_id": obj["id"]}
    )
    assert response.status_code == 202, response.text
    tp, job = response.json()["trustpoint"], response.json()["job"]
    assert response.headers["location"] == f"{V1}/domains/{GLOBAL}/jobs/{job['id']}"
    assert (tp["name"], tp["device_name"], tp["enrollment_type"]) == (
        "vpn-ecdsa",
        device["name"],
        "self_signed",
    )
    assert (tp["ca_status"], tp["identity_status"]) == ("in_progress", "in_progress")
    assert tp["identity_certificate"] is None and tp["ca_certificates"] == []
    assert (job["kind"], job["state"], job["attempts"], job["max_attempts"]) == ("enroll", "queued", 0, 4)
    assert job["steps"][0]["step"] == "requested" and "test admin" in job["steps"][0]["detail"]

    [message] = published(api.broker)
    assert (message.queue_name, message.actor_name) == (JOBS_QUEUE, "enroll_trustpoint")
    assert message.args == (job["id"],) and message.kwargs == {}

    fetched = api.ok("GET", response.headers["location"].removeprefix(V1))
    assert fetched["id"] == job["id"] and fetched["trustpoint_name"] == "vpn-ecdsa"
    assert api.ok("GET", f"/domains/{GLOBAL}/jobs?state=queued")["total"] == 1
    again = problem(
        api.post(
            f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints", {"enrollment_object_id": obj["id"]}
        ),
        409,
        "duplicate_trustpoint",
    )
    assert "vpn-ecdsa" in again["detail"]
    assert published(api.broker) == []


def test_one_job_at_a_time_per_trustpoint(api):
    device = api.device("ACT-1")
    accepted = api.add(device["id"], api.enrollment_object("vpn")["id"])
    base = f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints/vpn"
    busy = problem(api.post(f"{base}/re-enroll"), 409, "job_in_progress")
    assert busy["job_id"] == accepted["job"]["id"] and accepted["job"]["id"] in busy["detail"]
    problem(api.post(f"{base}/refresh"), 409, "job_in_progress")
    problem(api.call("DELETE", base), 409, "job_in_progress")

    finish_jobs(api.engine)
    assert api.ok("GET", base)["identity_status"] == "available"
    reenroll = api.ok("POST", f"{base}/re-enroll", status=202)
    assert reenroll["job"]["kind"] == "re_enroll"
    assert (reenroll["trustpoint"]["ca_status"], reenroll["trustpoint"]["identity_status"]) == (
        "in_progress",
        "in_progress",
    )
    finish_jobs(api.engine)
    assert api.ok("POST", f"{base}/refresh", status=202)["job"]["kind"] == "refresh"
    finish_jobs(api.engine)
    deleting = api.ok("DELETE", base, status=202)
    assert deleting["job"]["kind"] == "delete" and deleting["trustpoint"]["name"] == "vpn"
    kinds = [m.actor_name for m in published(api.broker)]
    assert kinds == ["enroll_trustpoint", "re_enroll_trustpoint", "refresh_trustpoint", "delete_trustpoint"]
    problem(api.post(f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints/nope/refresh"), 404, "not_found")


def test_a_failed_trustpoint_shows_why_and_can_be_re_enrolled(api):
    device = api.device("FAIL-1")
    api.add(device["id"], api.enrollment_object("vpn")["id"])
    with Session(api.engine) as session:
        tp = session.exec(select(Trustpoint)).one()
        transition(
            tp,
            now=datetime.now(UTC),
            ca=Status.FAILED,
            identity=Status.FAILED,
            error_code="ca_unreachable",
            error_message="CA at https://[2001:db8::5]/ unreachable: connection refused",
        )
        session.add(tp)
        session.commit()
    finish_jobs(api.engine, available=False)
    base = f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints/vpn"
    failed = api.ok("GET", base)
    assert (failed["identity_status"], failed["error_code"]) == ("failed", "ca_unreachable")
    assert "connection refused" in failed["error_message"]
    assert [
        t["name"] for t in api.ok("GET", f"/domains/{GLOBAL}/trustpoints?identity_status=failed")["items"]
    ] == ["vpn"]
    retried = api.ok("POST", f"{base}/re-enroll", status=202)["trustpoint"]
    assert (retried["identity_status"], retried["error_code"]) == ("in_progress", None)


def test_trustpoint_shows_its_certificates(api):
    device = api.device("CERT-1")
    tp = api.add(device["id"], api.enrollment_object("vpn")["id"])["trustpoint"]
    install_certificate(api.engine, tp["id"], expires_in_days=300)
    install_certificate(api.engine, tp["id"], expires_in_days=900, role="ca", position=1)
    install_certificate(api.engine, tp["id"], expires_in_days=600, role="ca", position=0)
    detail = api.ok("GET", f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints/vpn")
    identity = detail["identity_certificate"]
    assert identity["pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert identity["subject_alt_names"] == ["DNS:fw.example.com"]
    assert identity["key_algorithm"] == "ECDSA" and identity["key_size"] == 256 and identity["is_ca"] is False
    assert "clientAuth" in identity["extended_key_usage"] and identity["fingerprint_sha1"]
    assert [c["chain_position"] for c in detail["ca_certificates"]] == [0, 1]
    listed = api.ok("GET", f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints")["items"][0]
    assert listed["identity_certificate"]["fingerprint_sha256"] == identity["fingerprint_sha256"]
    assert "pem" not in listed["identity_certificate"]


def test_domain_trustpoint_list_filters_and_pages(api):
    obj = api.enrollment_object("vpn")
    devices = [api.device(f"LIST-{i:02d}") for i in range(12)]
    for device in devices:
        api.add(device["id"], obj["id"])
    finish_jobs(api.engine)
    for device in devices[:5]:
        api.ok("POST", f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints/vpn/refresh", status=202)
    seen = []
    for offset in (0, 5, 10):
        page = api.ok(
            "GET", f"/domains/{GLOBAL}/trustpoints?identity_status=available&limit=5&offset={offset}"
        )
        assert page["total"] == 7
        seen += [t["device_name"] for t in page["items"]]
    assert len(seen) == len(set(seen)) == 7
    assert (
        api.ok("GET", f"/domains/{GLOBAL}/trustpoints?ca_status=in_progress&identity_status=in_progress")[
            "total"
        ]
        == 5
    )
    problem(api.get(f"/domains/{GLOBAL}/trustpoints?identity_status=great"), 422, "validation_error")


def test_pkcs12_objects_wait_for_their_file(api):
    device = api.device("P12-1")
    obj = api.enrollment_object("p12", enrollment_type="pkcs12")
    problem(
        api.post(
            f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints", {"enrollment_object_id": obj["id"]}
        ),
        409,
        "pkcs12_file_missing",
    )


def test_a_broker_outage_does_not_lose_the_request(db_engine, tmp_path):
    # Nothing listens on this port: publishing fails, the job is kept for the reconciler.
    broker = make_broker(Settings(broker_url="redis://127.0.0.1:9/11"))
    client, tokens = start_api(db_engine, broker)
    with client:
        api = Api(client=client, engine=db_engine, broker=broker, tokens=tokens)
        device = api.device("OUTAGE-1")
        obj = api.enrollment_object("vpn")
        with capture_logs() as logs:
            accepted = api.add(device["id"], obj["id"])
        assert accepted["job"]["state"] == "queued"
        warning = next(e for e in logs if e["log_level"] == "warning")
        assert "reconciler" in warning["event"] and warning["job_id"] == accepted["job"]["id"]
    with Session(db_engine) as session:
        assert session.get(Job, uuid.UUID(accepted["job"]["id"])).lease_expires_at is not None
    broker.close()


# --- metrics -----------------------------------------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return None


@pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_metrics_follow_the_fleet(api):
    text = api.client.get("/metrics").text
    assert metric(text, "certfleet_certificates_expired") == 0
    assert metric(text, "certfleet_certificates_expiring", within_days="90") == 0
    assert "certfleet_certificate_earliest_expiry_timestamp_seconds" not in text

    obj = api.enrollment_object("vpn")
    tps = [api.add(api.device(f"MET-{i}")["id"], obj["id"])["trustpoint"] for i in range(4)]
    text = api.client.get("/metrics").text
    assert metric(text, "certfleet_trustpoints", ca_status="in_progress", identity_status="in_progress") == 4

    install_certificate(api.engine, tps[0]["id"], expires_in_days=-2)  # expired
    soon = install_certificate(api.engine, tps[1]["id"], expires_in_days=5)
    install_certificate(api.engine, tps[2]["id"], expires_in_days=45)
    # CA certificates do not count.
    install_certificate(api.engine, tps[3]["id"], expires_in_days=45, role="ca")
    finish_jobs(api.engine)
    text = api.client.get("/metrics").text
    assert metric(text, "certfleet_trustpoints", ca_status="available", identity_status="available") == 4
    assert (
        metric(text, "certfleet_trustpoints", ca_status="in_progress", identity_status="in_progress") is None
    )
    expected = {"1": 1, "7": 2, "14": 2, "30": 2, "60": 3, "90": 3}
    assert {d: metric(text, "certfleet_certificates_expiring", within_days=d) for d in expected} == expected
    assert metric(text, "certfleet_certificates_expired") == 1
    earliest = metric(text, "certfleet_certificate_earliest_expiry_timestamp_seconds")
    assert earliest is not None and earliest < soon.not_after.timestamp()



@pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_metrics_show_the_job_queue_its_oldest_wait_and_the_renewals_under_way(db_engine, stub_broker):
    clock = ManualClock()
    client, tokens = start_api(db_engine, stub_broker, clock=clock)
    with client:
        api = Api(client=client, engine=db_engine, broker=stub_broker, tokens=tokens)
        text = api.client.get("/metrics").text
        # Every kind and state is a series from the start, at zero: the dashboard draws them at once.
        assert metric(text, "certfleet_jobs_unfinished", kind="bundle_update", state="running") == 0
        assert metric(text, "certfleet_jobs_oldest_queued_age_seconds", kind="enroll") == 0
        assert metric(text, "certfleet_renewals_in_progress", method="est") == 0
        assert metric(text, "certfleet_trustpoints_renewal_failed", method="self_signed") == 0

        obj = api.enrollment_object("vpn")
        tps = [api.add(api.device(f"Q-{i}")["id"], obj["id"])["trustpoint"] for i in range(5)]
        with Session(api.engine) as session:
            jobs = {job.trustpoint_id: job for job in session.exec(select(Job)).all()}
            waiting, fresh, retrying, running, renewal = (jobs[uuid.UUID(tp["id"])] for tp in tps)
            waiting.created_at = clock() - timedelta(seconds=90)
            fresh.created_at = clock() - timedelta(seconds=30)
            # Waited long, but its retry is not due for another minute: not waiting now.
            retrying.created_at = clock() - timedelta(hours=1)
            retrying.next_attempt_at = clock() + timedelta(seconds=60)
            running.state, running.created_at = "running", clock() - timedelta(hours=2)
            renewal.kind, renewal.reason = "re_enroll", "renewal"
            renewal.created_at = renewal.next_attempt_at = clock() - timedelta(seconds=5)
            failing = session.get(Trustpoint, uuid.UUID(tps[0]["id"]))
            failing.renewal_failures = 2
            session.add_all([waiting, fresh, retrying, running, renewal, failing])
            session.commit()

        text = api.client.get("/metrics").text
        assert metric(text, "certfleet_jobs_unfinished", kind="enroll", state="queued") == 3
        assert metric(text, "certfleet_jobs_unfinished", kind="enroll", state="running") == 1
        assert metric(text, "certfleet_jobs_unfinished", kind="re_enroll", state="queued") == 1
        assert metric(text, "certfleet_jobs_oldest_queued_age_seconds", kind="enroll") == 90
        assert metric(text, "certfleet_jobs_oldest_queued_age_seconds", kind="re_enroll") == 5
        assert metric(text, "certfleet_renewals_in_progress", method="self_signed") == 1
        assert metric(text, "certfleet_trustpoints_renewal_failed", method="self_signed") == 1

        clock.advance(120)  # the retry came due 60 s ago; the first job has waited 210 s
        text = api.client.get("/metrics").text
        assert metric(text, "certfleet_jobs_oldest_queued_age_seconds", kind="enroll") == 210
        finish_jobs(api.engine)
        text = api.client.get("/metrics").text
        assert metric(text, "certfleet_jobs_unfinished", kind="enroll", state="queued") == 0
        assert metric(text, "certfleet_jobs_oldest_queued_age_seconds", kind="enroll") == 0
        assert metric(text, "certfleet_renewals_in_progress", method="self_signed") == 0


# --- importing a fleet -------------------------------------------------------------------------


class InventoryServer:
    """A device-management API's inventory on a real loopback port, served by http.server."""

    def __init__(self, devices: int, *, body: bytes | None = None, page_cap: int = 1000) -> None:
        items = [
            {
                "serial": f"INV-{i:06d}",
                "name": f"inv-{i}",
                "model": "FTD 1010",
                "ip_address": "198.51.100.7",
                "fqdn": f"inv-{i}.example.net",
                "management_url": f"http://127.0.0.1:8400/api/devices/INV-{i:06d}",
            }
            for i in range(devices)
        ]
        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                outer.requests += 1
                parts = urlsplit(self.path)
                if parts.path != "/api/inventory":
                    self.send_error(404)
                    return
                if body is not None:
                    payload = body
                else:
                    query = parse_qs(parts.query)
                    offset = int(query["offset"][0])
                    limit = min(int(query["limit"][0]), page_cap)
                    payload = json.dumps(
                        {"items": items[offset : offset + limit], "total": len(items)}
                    ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> InventoryServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_import_registers_a_fleet_once(api):
    child = api.domain("Imported")
    api.device("INV-000003", domain=child)  # already known
    with InventoryServer(2500) as inventory:
        result = api.ok("POST", f"/domains/{child}/devices/import", {"inventory_url": inventory.url})
        # An admin's import: every device trusted at its URL; this inventory carries no credentials.
        assert result == {"imported": 2499, "skipped": 1, "approved": 2499, "credentials": 0}
        assert inventory.requests == 3  # the server hands out at most 1000 per page
        assert api.ok("POST", f"/domains/{child}/devices/import", {"inventory_url": inventory.url + "/"}) == {
            "imported": 0,
            "skipped": 2500,
            "approved": 0,
            "credentials": 0,
        }
    listed = api.ok("GET", f"/domains/{child}/devices?serial=INV-002499")["items"]
    assert [(d["name"], d["domain_id"], d["fqdn"]) for d in listed] == [
        ("inv-2499", child, "inv-2499.example.net")
    ]
    assert api.ok("GET", f"/domains/{child}/devices?limit=1")["total"] == 2500


def test_import_errors_name_the_inventory(api):
    with InventoryServer(0) as dead:
        url = dead.url
    unreachable = problem(
        api.post(f"/domains/{GLOBAL}/devices/import", {"inventory_url": url}), 502, "inventory_unreachable"
    )
    assert url in unreachable["detail"]
    with InventoryServer(0, body=b"<html>surprise</html>") as garbage:
        invalid = problem(
            api.post(f"/domains/{GLOBAL}/devices/import", {"inventory_url": garbage.url}),
            502,
            "inventory_invalid",
        )
        assert garbage.url in invalid["detail"]
    with InventoryServer(0, body=json.dumps({"items": [{"serial": "X"}], "total": 1}).encode()) as partial:
        problem(
            api.post(f"/domains/{GLOBAL}/devices/import", {"inventory_url": partial.url}),
            502,
            "inventory_invalid",
        )
    bad_device = {
        "items": [
            {
                "serial": "Y",
                "name": "y",
                "model": "m",
                "ip_address": "",
                "fqdn": "",
                "management_url": "gopher://old/",
            }
        ],
        "total": 1,
    }
    with InventoryServer(0, body=json.dumps(bad_device).encode()) as odd:
        detail = problem(
            api.post(f"/domains/{GLOBAL}/devices/import", {"inventory_url": odd.url}),
            502,
            "inventory_invalid",
        )["detail"]
        assert "'Y'" in detail and "management_url" in detail
    problem(
        api.post(f"/domains/{GLOBAL}/devices/import", {"inventory_url": "file:///etc/passwd"}),
        422,
        "invalid_url",
    )
    assert api.ok("GET", f"/domains/{GLOBAL}/devices")["total"] == 0


@pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_concurrent_actions_on_one_trustpoint_start_one_job(db_engine, stub_broker):
    """Eight operators press re-enroll at once, over real HTTP: one job starts, seven are told why not."""
    from concurrent.futures import ThreadPoolExecutor

    from shared.http_thread import ServerThread

    client, tokens = start_api(db_engine, stub_broker)
    with client:
        api = Api(client=client, engine=db_engine, broker=stub_broker, tokens=tokens)
        device = api.device("RACE-1")
        api.add(device["id"], api.enrollment_object("vpn")["id"])
        finish_jobs(db_engine)
        server = ServerThread(client.app).start()
        try:
            url = f"{server.url}{V1}/domains/{GLOBAL}/devices/{device['id']}/trustpoints/vpn/re-enroll"
            headers = {"Authorization": f"Bearer {tokens['network_admin']}"}
            with httpx.Client(timeout=30) as http, ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: http.post(url, headers=headers), range(8)))
        finally:
            server.stop()
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202] + [409] * 7, [a.text for a in answers]
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"job_in_progress"}
    with Session(db_engine) as session:
        assert len(session.exec(select(Job).where(Job.kind == "re_enroll")).all()) == 1


def test_a_token_can_follow_an_option_on_any_command_line(api):
    # A token starting with "-" would be taken for an option by `certfleet … --token TOKEN`.
    from sqlmodel import Session

    from services.controller.api.auth import TOKEN_PREFIX, create_token
    from shared.enums import Role

    with Session(api.engine) as session:
        tokens = [create_token(session, role=Role.READ_ONLY) for _ in range(200)]
        session.commit()
    assert all(token.startswith(TOKEN_PREFIX) for token in tokens)
    assert api.get("/domains", headers={"Authorization": f"Bearer {tokens[0]}"}, role=None).status_code == 200
