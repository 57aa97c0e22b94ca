"""The audit log through the API: every change a route can make leaves an entry (the routes come
from the live OpenAPI document, so a new route is covered without editing this file), refusals
included; each entry says who, when, where, what and how it ended; a domain reads its subtree's
entries, filtered and paged; and no secret sent with a change ever reaches the log."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import timedelta

from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from sqlmodel import Session, select

from shared.enrollment import EnrollmentParameters
from shared.models import GLOBAL_DOMAIN_ID, AuditEntry
from shared.pki import DeviceIdentity, generate_private_key, self_signed_certificate
from tests.support.api import GLOBAL, V1, problem
from tests.support.clock import START

READS = {"get", "head", "options"}


def entries(api) -> list[AuditEntry]:
    with Session(api.engine) as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.at)).all())


def token_for(api, role: str, domain: str, name: str) -> dict:
    return api.ok("POST", "/tokens", {"name": name, "role": role, "domain_id": domain}, status=201)


def as_token(api, token: str | None, method: str, path: str, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.client.request(method, V1 + path, headers=headers, **kwargs)


def test_every_route_that_may_change_something_leaves_an_entry_whoever_asks(api):
    document = api.client.app.openapi()
    routes = [(method.upper(), path, operation["operationId"]) for path, operations in document["paths"].items()
              if path.startswith(V1) for method, operation in operations.items() if method not in READS]
    assert len(routes) > 30, routes
    answered = {}
    for method, path, _ in routes:
        # Ids of nothing: every route is reached, and nothing is changed.
        url = re.sub(r"\{(\w+_id)\}", lambda _: str(uuid.uuid4()), path)
        url = re.sub(r"\{\w+\}", "x", url)
        for role in (None, "read_only"):
            headers = {"Authorization": f"Bearer {api.tokens[role]}"} if role else {}
            answered[(method, path, role)] = api.client.request(method, url, headers=headers).status_code

    recorded = {(e.method, e.path, e.token_name or None): e for e in entries(api)}
    for method, path, operation_id in routes:
        for role in (None, "read_only"):
            entry = recorded.get((method, path, f"test {role}" if role else None))
            assert entry is not None, f"{method} {path} as {role or 'nobody'} left no audit entry"
            assert operation_id.startswith(entry.action + "_"), (entry.action, operation_id)
            assert entry.status == answered[(method, path, role)] and entry.outcome == "failed"
            if role is None:
                assert (entry.status, entry.error_code, entry.token_id, entry.role) == (401, "unauthorized", None, "")
            else:
                assert entry.role == "read_only" and entry.token_id is not None
    assert len(entries(api)) == 2 * len(routes)  # one each, and reads leave none

    # A body over the cap is refused before routing or authentication: it is recorded as its route's.
    too_large = api.client.post(f"{V1}/domains/{GLOBAL}/devices", content=b"x" * (1 << 21),
                                headers={"Content-Type": "application/json"})
    assert too_large.status_code == 413
    refused = entries(api)[-1]
    assert (refused.action, refused.status, refused.error_code, refused.domain_id) == (
        "create_device", 413, "request_too_large", GLOBAL_DOMAIN_ID)


def test_an_entry_says_who_when_where_what_and_how_it_ended(api):
    a = api.domain("A")
    a1 = api.domain("A1", parent=a)
    b = api.domain("B")
    net_a = token_for(api, "network_admin", a, "A net")
    reader_a = token_for(api, "read_only", a, "A auditor")["token"]
    admin_b = token_for(api, "admin", b, "B admin")["token"]
    before = len(entries(api))

    device = as_token(api, net_a["token"], "POST", f"/domains/{a1}/devices",
                      json={"name": "fw-a1", "serial": "A1-1", "management_url": "http://127.0.0.1:9/api/devices/1"})
    assert device.status_code == 201, device.text
    device_id = device.json()["id"]
    assert as_token(api, net_a["token"], "PATCH", f"/domains/{a1}/devices/{device_id}",
                    json={"model": "FTD 3110"}).status_code == 200
    assert as_token(api, net_a["token"], "POST", "/domains", json={"name": "mine"}).status_code == 403
    probe = as_token(api, net_a["token"], "POST", f"/domains/{b}/devices",
                     json={"name": "x", "serial": "B-9", "management_url": "http://127.0.0.1:9/api/devices/9"})
    assert probe.status_code == 404
    assert as_token(api, None, "DELETE", f"/domains/{b}/devices/{device_id}").status_code == 401

    made, changed, forbidden, probed, nobody = entries(api)[before:]
    assert made.at <= changed.at <= forbidden.at <= probed.at <= nobody.at
    assert (made.channel, made.token_id, made.token_name, made.role, made.home_domain_id) == (
        "api", uuid.UUID(net_a["id"]), "A net", "network_admin", uuid.UUID(a))
    assert (made.action, made.method, made.path, made.domain_id) == (
        "create_device", "POST", "/api/v1/domains/{domain_id}/devices", uuid.UUID(a1))
    assert (made.status, made.outcome, made.error_code, made.target_id) == (201, "ok", None, uuid.UUID(device_id))
    assert (changed.action, changed.device_id, changed.target_id, changed.targets) == (
        "update_device", uuid.UUID(device_id), uuid.UUID(device_id), {"domain_id": a1, "device_id": device_id})
    assert (forbidden.action, forbidden.status, forbidden.error_code, forbidden.domain_id) == (
        "create_domain", 403, "forbidden", uuid.UUID(a))  # no domain in the path: the caller's home
    # A probe of a domain out of reach stays with the prober: the sibling never sees who probed.
    assert (probed.status, probed.error_code, probed.domain_id) == (404, "not_found", uuid.UUID(a))
    assert (nobody.token_id, nobody.token_name, nobody.status, nobody.domain_id) == (None, "", 401, uuid.UUID(b))

    # A domain reads its subtree's entries, newest first; every role may read them.
    # (The tokens for A were made by an admin homed at Global: those entries are Global's.)
    page = as_token(api, reader_a, "GET", f"/domains/{a}/audit").json()
    assert [e["id"] for e in page["items"]] == [str(e.id) for e in (probed, forbidden, changed, made)]
    sub = as_token(api, reader_a, "GET", f"/domains/{a1}/audit").json()
    assert [e["id"] for e in sub["items"]] == [str(changed.id), str(made.id)]
    seen_by_b = as_token(api, admin_b, "GET", f"/domains/{b}/audit").json()["items"]
    assert str(nobody.id) in {e["id"] for e in seen_by_b} and str(probed.id) not in {e["id"] for e in seen_by_b}
    problem(as_token(api, admin_b, "GET", f"/domains/{a}/audit"), 404, "not_found")
    problem(as_token(api, None, "GET", f"/domains/{a}/audit"), 401, "unauthorized")


def test_the_log_is_filtered_and_paged(api):
    device, job, token = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    rows = [
        AuditEntry(at=START, domain_id=GLOBAL_DOMAIN_ID, channel="api", token_id=token, token_name="ops",
                   role="admin", action="create_device", method="POST", path="/p", outcome="ok", status=201,
                   target_id=device),
        AuditEntry(at=START + timedelta(hours=1), domain_id=GLOBAL_DOMAIN_ID, channel="api", token_id=token,
                   action="add_trustpoint", method="POST", path="/p", outcome="ok", status=202, device_id=device,
                   target_id=job),
        AuditEntry(at=START + timedelta(hours=2), domain_id=GLOBAL_DOMAIN_ID, channel="api",
                   action="update_device", method="PATCH", path="/p", outcome="failed", status=401,
                   error_code="unauthorized", device_id=device, target_id=device),
        AuditEntry(at=START + timedelta(hours=3), domain_id=GLOBAL_DOMAIN_ID, channel="cli", operator="root@ctl",
                   action="token_revoke", outcome="ok", target_id=token),
    ]
    with Session(api.engine, expire_on_commit=False) as session:
        session.add_all(rows)
        session.commit()
    made, added, refused, revoked = (str(r.id) for r in rows)

    def ids(**params) -> list[str]:
        page = api.ok("GET", f"/domains/{GLOBAL}/audit", params=params)
        assert page["total"] == len(page["items"])
        return [e["id"] for e in page["items"]]

    assert ids() == [revoked, refused, added, made]
    assert ids(since=(START + timedelta(hours=1)).isoformat(), until=(START + timedelta(hours=3)).isoformat()) == [
        refused, added]
    assert ids(since="2030-01-01T14:00:00") == [revoked, refused]  # a time without offset is UTC
    assert ids(action="update_device") == [refused]
    assert ids(token_id=str(token)) == [added, made]
    assert ids(outcome="failed") == [refused] and ids(outcome="ok") == [revoked, added, made]
    assert ids(device_id=str(device)) == [refused, added]
    assert ids(target_id=str(device)) == [refused, added, made]  # as the target or the device
    assert ids(target_id=str(token)) == [revoked]
    page = api.ok("GET", f"/domains/{GLOBAL}/audit", params={"offset": 1, "limit": 2})
    assert ([e["id"] for e in page["items"]], page["total"]) == ([refused, added], 4)
    cli = api.ok("GET", f"/domains/{GLOBAL}/audit", params={"action": "token_revoke"})["items"][0]
    assert (cli["channel"], cli["operator"], cli["status"], cli["outcome"]) == ("cli", "root@ctl", None, "ok")
    problem(api.get(f"/domains/{GLOBAL}/audit?outcome=maybe"), 422, "validation_error")
    problem(api.get(f"/domains/{GLOBAL}/audit?since=yesterday"), 422, "validation_error")


def _pkcs12_file(passphrase: bytes) -> bytes:
    key = generate_private_key("ecdsa", 256)
    params = EnrollmentParameters(name="vpn", enrollment_type="self_signed", key_type="ecdsa", key_size=256)
    cert = self_signed_certificate(key, params, DeviceIdentity(serial="P12"), now=START, serial=3)
    return pkcs12.serialize_key_and_certificates(b"vpn", key, cert, None, BestAvailableEncryption(passphrase))


def test_no_secret_sent_with_a_change_reaches_the_audit_log(api):
    secrets = {"est": "est-Password-7781", "scep": "scep-Challenge-5512", "p12": "p12-Passphrase-9034",
               "p12-new": "p12-Passphrase-2207", "webhook": "webhook-Secret-0000-abcdef", "export": "Export-Pass-4410",
               "query": "query-Secret-3318"}
    p12_file = _pkcs12_file(secrets["p12"].encode())
    objects = f"/domains/{GLOBAL}/enrollment-objects"
    est = api.enrollment_object("vpn-est", enrollment_type="est", enrollment_url="https://ca.example.com/est",
                                username="fw", password=secrets["est"], ignore_server_validation=True)
    api.ok("PUT", f"{objects}/{est['id']}", {
        "name": "vpn-est", "enrollment_type": "est", "key_type": "ecdsa", "key_size": 256,
        "enrollment_url": "https://ca.example.com/est", "username": "fw", "password": secrets["est"] + "-2",
        "ignore_server_validation": True})
    api.enrollment_object("vpn-scep", enrollment_type="scep", enrollment_url="http://ca.example.com/scep",
                          challenge_password=secrets["scep"])
    upload = api.call("POST", f"{objects}/pkcs12", data={"passphrase": secrets["p12"]},
                      files={"file": ("vpn-p12.p12", p12_file, "application/x-pkcs12")})
    assert upload.status_code == 201, upload.text
    api.ok("PUT", f"{objects}/{upload.json()['id']}/passphrase", {"passphrase": secrets["p12-new"]})
    api.ok("POST", f"/domains/{GLOBAL}/webhooks", {"url": "https://hooks.example.com/a",
                                                    "secret": secrets["webhook"]}, status=201)
    issued = api.ok("POST", "/tokens", {"name": "new", "role": "read_only"}, status=201)
    device = api.device("SEC-1")
    api.call("POST", f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints/vpn-est/export",
             json={"format": "pkcs12", "passphrase": secrets["export"]})
    # Refused ones too: a body the API does not accept, and a secret in a query string.
    api.call("POST", objects, json={"name": "bad", "enrollment_type": "est", "password": secrets["est"],
                                    "no_such_field": secrets["scep"]})
    api.call("POST", f"{objects}?password={secrets['query']}", json={"name": "q", "enrollment_type": "self_signed"})
    api.call("POST", f"/domains/{GLOBAL}/webhooks", role=None, json={"url": "x", "secret": secrets["webhook"]})

    stored = json.dumps([e.model_dump(mode="json") for e in entries(api)])
    shown = api.get(f"/domains/{GLOBAL}/audit", params={"limit": 1000}).text
    assert json.loads(shown)["total"] == 12  # every change asked, made or refused
    for where in (stored, shown):
        for secret in [*secrets.values(), issued["token"], base64.b64encode(p12_file).decode()]:
            assert secret not in where
    # What the entries do say: the export's format, the token and object that were made.
    export = api.ok("GET", f"/domains/{GLOBAL}/audit", params={"action": "export_certificate"})["items"][0]
    assert export["details"]["format"] == "pkcs12" and export["error_code"] == "not_found"
    token = api.ok("GET", f"/domains/{GLOBAL}/audit", params={"action": "create_token"})["items"][0]
    assert token["target_id"] == issued["id"]
