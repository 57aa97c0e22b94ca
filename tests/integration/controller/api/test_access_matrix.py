"""Who may call what, for every route the API documents: the routes come from the live OpenAPI
document, so a new route is in the matrix without editing this file.

Domains: Global, A and B (siblings below Global) and A1 (below A). The callers are an admin, a
network admin and a read-only token, all homed at A. Every route is called with the ids of
objects of A and A1 (reachable), of B (a sibling), of Global (an ancestor: only its enrollment
objects may be read and used) and with random ids. A call outside the caller's reach answers 404
exactly as for an id that does not exist; a role that may not do something answers 403; nothing
answers 500.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from shared.enrollment import EnrollmentParameters
from shared.enums import AlertCode, AlertState, Role, Severity
from shared.models import Alert, WebhookDelivery
from shared.pki import DeviceIdentity, generate_private_key, self_signed_certificate, to_pem
from tests.support.api import GLOBAL, V1, Api

#: Only an admin homed at Global may change what the whole installation shares.
INSTALLATION = "installation admin"
#: Routes whose id placeholders name something the matrix makes; a new kind of id needs a line here.
KINDS = {"domain_id": "domain", "device_id": "device", "object_id": "object", "job_id": "job",
         "alert_id": "alert", "webhook_id": "webhook", "delivery_id": "delivery", "token_id": "token",
         "name": "name", "keyring": "keyring", "endpoint_id": "endpoint"}
BATCH_KINDS = {"bulk-enrollments": "enroll_batch", "bulk-actions": "action_batch",
               "keyring-regenerations": "keyring_batch", "pushes": "push_batch"}
WEBHOOK = {"url": "https://alerts.example.com/matrix", "secret": "matrix-webhook-secret"}


def needed_role(method: str, path: str) -> str | Role:
    """The role a route needs: the policy the README's Access section states."""
    if path.startswith("/cert-update") or (path.startswith(("/schedules", "/management-endpoints"))
                                           and method != "GET"):
        return INSTALLATION
    if path.startswith("/tokens") or path.endswith("/trust"):
        return Role.ADMIN
    if method == "GET" or path.endswith("/validate"):
        return Role.READ_ONLY
    if re.fullmatch(r"/domains(/\{domain_id\})?", path) or "/webhooks" in path:
        return Role.ADMIN
    return Role.NETWORK_ADMIN


def body_for(method: str, path: str, certificate_pem: str) -> dict | None:
    """A request body that passes validation, with {placeholders} for the ids of the case."""
    n = "{n}"
    bodies = {
        ("POST", "/domains"): {"name": f"matrix-{n}", "parent_id": "{domain}"},
        ("PATCH", "/domains/{domain_id}"): {"auto_regenerate_keyring": None},
        ("POST", "/devices"): {"name": f"fw-{n}", "serial": f"MX-{n}",
                               "management_url": "http://127.0.0.1:9/api/devices/x"},
        ("POST", "/devices/import"): {"inventory_url": "http://127.0.0.1:9"},
        ("PATCH", "/devices/{device_id}"): {"domain_id": "{domain}", "model": "FTD 3110"},
        ("POST", "/enrollment-objects"): {"name": f"eo-{n}", "enrollment_type": "self_signed", "key_type": "ecdsa",
                                          "key_size": 256},
        ("POST", "/enrollment-objects/pkcs12"): {"filename": f"p-{n}.p12", "pkcs12_base64": "AAAA",
                                                 "passphrase": "x"},
        ("PUT", "/enrollment-objects/{object_id}/passphrase"): {"passphrase": "x"},
        ("PUT", "/enrollment-objects/{object_id}/override"): {"common_name": "matrix.example.com"},
        ("PUT", "/enrollment-objects/{object_id}"): {"name": "{name}", "enrollment_type": "self_signed",
                                                     "key_type": "ecdsa", "key_size": 256},
        ("POST", "/trustpoints"): {"enrollment_object_id": "{object}"},
        ("POST", "/identity-certificate"): {"certificate_pem": certificate_pem},
        ("POST", "/export"): {"format": "pem"},
        ("POST", "/validate"): {"certificate_pem": certificate_pem},
        ("POST", "/bulk-enrollments"): {"enrollment_object_id": "{object}", "selection": {"device_ids": ["{device}"]}},
        ("POST", "/bulk-actions"): {"action": "refresh", "enrollment_object_id": "{object}",
                                    "selection": {"device_ids": ["{device}"]}},
        ("POST", "/bulk-weak-crypto"): {"selection": {"device_ids": ["{device}"]}, "weak_crypto": False},
        ("PUT", "/schedules/{name}"): {"enabled": True},
        ("POST", "/cert-update/run-now"): {"force": False},
        ("PUT", "/cert-update/auto-update"): {"enabled": True},
        ("POST", "/webhooks"): WEBHOOK,
        ("POST", "/keyring-regenerations"): {"device_ids": ["{device}"]},
        ("POST", "/tokens"): {"name": f"t-{n}", "role": "read_only", "domain_id": "{domain}"},
        ("POST", "/management-endpoints"): {"scheme": "https", "host": f"fw-{n}.example.net"},
        ("POST", "/trust"): {"credential": "matrix-endpoint-credential-0123456789"},
    }
    for (verb, suffix), body in bodies.items():
        if verb == method and (path.endswith(suffix) or path == suffix):
            return body
    return None


def make_world(api: Api) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The four domains by label, and each label's objects: kind -> id ("random": ids of nothing)."""
    a = api.domain("A")
    domains = {"Global": GLOBAL, "A": a, "B": api.domain("B"), "A1": api.domain("A1", parent=a)}
    # The allow-list is the installation's, not a domain's: one entry, the same for every placement.
    endpoint = api.ok("POST", "/management-endpoints", {"scheme": "https", "host": "10.20.0.0/16"}, status=201)["id"]
    world = {}
    for label, domain in domains.items():
        device = api.device(f"MX-{label}", domain=domain)
        obj = api.enrollment_object(f"vpn-{label}", domain=domain)
        added = api.add(device["id"], obj["id"], domain=domain)
        webhook = api.ok("POST", f"/domains/{domain}/webhooks", WEBHOOK, status=201)
        selection = {"device_ids": [device["id"]]}
        enroll_batch = api.ok("POST", f"/domains/{domain}/bulk-enrollments",
                              {"enrollment_object_id": obj["id"], "selection": selection}, status=202)
        action_batch = api.ok("POST", f"/domains/{domain}/bulk-actions",
                              {"action": "refresh", "enrollment_object_id": obj["id"], "selection": selection},
                              status=202)
        keyring_batch = api.ok("POST", f"/domains/{domain}/keyring-regenerations", selection, status=202)
        token = api.ok("POST", "/tokens", {"name": f"victim {label}", "role": "read_only", "domain_id": domain},
                       status=201)
        now = datetime.now(UTC)
        alert = Alert(code=AlertCode.KEYRING_EXPIRED.value, severity=Severity.CRITICAL.value, description="expired",
                      domain_id=uuid.UUID(domain), device_id=uuid.UUID(device["id"]), device_name=device["name"],
                      condition_key=f"matrix-{label}", state=AlertState.ACTIVE.value, first_seen=now, last_seen=now)
        delivery = WebhookDelivery(webhook_id=uuid.UUID(webhook["id"]), event_id=uuid.uuid4(), event_seq=1,
                                   event_type="io.certfleet.alert.raised", alert_id=alert.id, state="dead")
        with Session(api.engine, expire_on_commit=False) as session:
            session.add_all([alert, delivery])
            session.commit()
        world[label] = {
            "domain": domain, "device": device["id"], "object": obj["id"], "name": obj["name"],
            "job": added["job"]["id"], "alert": str(alert.id), "webhook": webhook["id"], "delivery": str(delivery.id),
            "token": token["id"], "enroll_batch": enroll_batch["id"], "action_batch": action_batch["id"],
            "keyring_batch": keyring_batch["id"], "push_batch": enroll_batch["id"], "keyring": "default",
            "endpoint": endpoint,
        }
    random_ids = {kind: str(uuid.uuid4()) for kind in world["A"]}
    world["random"] = {**random_ids, "name": "no-such-trustpoint", "keyring": "default"}
    return domains, world


def certificate() -> str:
    key = generate_private_key("ecdsa", 256)
    params = EnrollmentParameters(name="peer", enrollment_type="self_signed", key_type="ecdsa", key_size=256,
                                  validity_days=30)
    return to_pem(self_signed_certificate(key, params, DeviceIdentity(serial="PEER"), now=datetime.now(UTC),
                                          serial=7))


def kinds_of(path: str, body: dict | None) -> list[str]:
    """What the route names: its path's ids (a batch by the collection it is in) and its body's."""
    kinds = []
    for before, param in re.findall(r"([\w-]*)/\{(\w+)\}", path):
        if param == "domain_id":
            continue  # the path's domain is the case's own question
        if param == "batch_id":
            kinds.append(BATCH_KINDS[before])
        else:
            assert param in KINDS, f"the access matrix does not know what {{{param}}} in {path} names: add it to KINDS"
            kinds.append(KINDS[param])
    kinds += re.findall(r"\{(\w+)\}", json.dumps(body)) if body else []
    return [k for k in kinds if k != "n"]


def test_every_route_answers_only_within_the_callers_domains_and_role(api):
    domains, world = make_world(api)
    subtree_of_a = {domains["A"], domains["A1"]}
    ancestors = {domains["A"]: {domains["A"], GLOBAL}, domains["A1"]: {domains["A1"], domains["A"], GLOBAL},
                 domains["B"]: {domains["B"], GLOBAL}, GLOBAL: {GLOBAL}}
    subtree = {domains["A"]: subtree_of_a, domains["A1"]: {domains["A1"]}, domains["B"]: {domains["B"]},
               GLOBAL: set(domains.values())}
    tokens = {role: api.ok("POST", "/tokens", {"name": f"A {role.value}", "role": role.value,
                                               "domain_id": domains["A"]}, status=201)["token"] for role in Role}
    pem = certificate()
    counter = itertools.count()
    # (path domain, owner of the ids): own, own subdomain, a sibling, an ancestor, nothing.
    cases = [("A", "A"), ("A1", "A1"), ("A", "A1"), ("B", "B"), ("A", "B"), ("Global", "Global"),
             ("A", "Global"), ("A", "random"), ("random", "random")]

    def visible(kind: str, path_domain: str | None, owner: str) -> bool:
        owner_domain = world[owner]["domain"]
        if owner == "random":
            return kind in ("keyring",)
        if path_domain is None:  # no domain in the path: the caller's own reach
            return owner_domain in subtree_of_a
        if kind == "object":
            return owner_domain in ancestors[path_domain]
        return owner_domain in subtree[path_domain]

    routes = [(method.upper(), path.removeprefix(V1)) for path, ops in api.client.app.openapi()["paths"].items()
              if path.startswith(V1) for method in ops]
    routes.sort(key=lambda route: route[0] == "DELETE")  # deletions last: they take objects away
    deleted: set[tuple[str, str]] = set()
    checked = 0
    for (method, path), (path_label, owner) in itertools.product(routes, cases):
        template = body_for(method, path, pem)
        ids = world[owner]
        path_domain = None
        if "{domain_id}" in path:
            path_domain = world[path_label]["domain"] if path_label != "random" else str(uuid.uuid4())
        elif path_label != owner:
            continue  # no path domain: the owner alone makes the case
        kinds = kinds_of(path, template)
        in_reach = path_domain is None or path_domain in subtree_of_a
        scope_ok = in_reach and all(visible(kind, path_domain, owner) for kind in kinds if kind != "domain") and (
            "domain" not in kinds or visible("domain", path_domain, owner))
        # An ancestor's enrollment object is read and used below it, never changed there; only
        # overridden there (the object's own domain gets 409: it changes the object itself).
        overriding = path.endswith("/override")
        if "/enrollment-objects/{object_id}" in path and method != "GET" and ids["domain"] != path_domain \
                and not overriding:
            scope_ok = False
        url = path.replace("{domain_id}", path_domain or "")
        for param, kind in KINDS.items():
            url = url.replace("{" + param + "}", ids.get(kind, ""))
        for collection, kind in BATCH_KINDS.items():
            url = url.replace(f"{collection}/{{batch_id}}", f"{collection}/{ids[kind]}")
        if path.startswith("/schedules/"):
            url = url.replace(ids["name"], "renewal")
        for role in (Role.READ_ONLY, Role.NETWORK_ADMIN, Role.ADMIN):
            body = None
            if template is not None:
                text = json.dumps(template).replace("{n}", str(next(counter)))
                for kind, value in ids.items():
                    text = text.replace("{" + kind + "}", value)
                body = json.loads(text)
            need = needed_role(method, path)
            role_ok = need != INSTALLATION and role.includes(need)
            if not role_ok and (path_label, owner) != cases[0]:
                continue  # a role is refused before anything is looked up: once per route is enough
            if role_ok and not scope_ok and role is not Role.ADMIN:
                continue  # the reach does not depend on the role: the admin, who may do most, tries it
            response = api.client.request(method, V1 + url, json=body,
                                          headers={"Authorization": f"Bearer {tokens[role]}"})
            status, where = response.status_code, f"{role.value} {method} {url} ({path_label}/{owner}): {response.text}"
            checked += 1
            assert status < 500 or status in (502, 503, 504), where  # an unreachable device, never a crash
            if not role_ok:
                assert status == 403 and response.json()["code"] == "forbidden", where
                assert f"needs role {Role.ADMIN if need == INSTALLATION else need}" in response.json()["detail"], where
            elif not scope_ok:
                assert status in (403, 404), where
                if status == 403:
                    assert response.json()["code"] == "inherited_object", where
            else:
                if status == 404 and method == "DELETE" and (path, owner) in deleted:
                    continue  # an earlier case deleted it
                # Past the role and the reach; a 404 now is about the object's state (e.g. no CSR yet).
                assert status not in (401, 403), where
                assert status != 404 or not response.json()["code"].endswith("not_found"), where
                if method == "DELETE" and status < 300:
                    deleted.add((path, owner))
    assert checked > 600, checked  # the matrix ran: some 65 routes, 9 placements, 3 roles


def test_a_token_reads_and_uses_its_ancestors_enrollment_objects_but_never_their_secrets(api):
    a = api.domain("A")
    est = api.enrollment_object("corp-est", enrollment_type="est", enrollment_url="https://ca.example.com/est",
                                username="fw", password="est-password-never-shown", ignore_server_validation=True)
    token = api.ok("POST", "/tokens", {"name": "A net", "role": "network_admin", "domain_id": a}, status=201)["token"]
    auth = {"Authorization": f"Bearer {token}"}
    seen = api.client.get(f"{V1}/domains/{a}/enrollment-objects/{est['id']}", headers=auth)
    assert seen.status_code == 200 and seen.json()["has_secret"] is True
    assert "est-password-never-shown" not in seen.text
    listed = api.client.get(f"{V1}/domains/{a}/enrollment-objects", headers=auth).json()["items"]
    assert est["id"] in {o["id"] for o in listed}
    device = api.client.post(f"{V1}/domains/{a}/devices", headers=auth, json={
        "name": "fw-a", "serial": "A-1", "management_url": "http://127.0.0.1:9/api/devices/A-1"})
    assert device.status_code == 201, device.text
    added = api.client.post(f"{V1}/domains/{a}/devices/{device.json()['id']}/trustpoints", headers=auth,
                            json={"enrollment_object_id": est["id"]})
    assert added.status_code == 202, added.text
    # Global itself, and its objects addressed through it, are out of reach.
    assert api.client.get(f"{V1}/domains/{GLOBAL}", headers=auth).status_code == 404
    assert api.client.get(f"{V1}/domains/{GLOBAL}/enrollment-objects/{est['id']}", headers=auth).status_code == 404
    assert {d["id"] for d in api.client.get(f"{V1}/domains", headers=auth).json()["items"]} == {a}


def test_a_token_is_issued_only_within_its_subtree_and_never_above_its_role(api):
    a = api.domain("A")
    b = api.domain("B")
    a1 = api.domain("A1", parent=a)
    admin_a = api.ok("POST", "/tokens", {"name": "A admin", "role": "admin", "domain_id": a}, status=201)
    assert admin_a["token"].startswith("cf_") and admin_a["state"] == "active"
    auth = {"Authorization": f"Bearer {admin_a['token']}"}

    made = api.client.post(f"{V1}/tokens", headers=auth, json={"role": "network_admin", "domain_id": a1})
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
    default_home = api.client.post(f"{V1}/tokens", headers=auth, json={"role": "read_only", "lifetime_days": 7})
    assert default_home.json()["domain_id"] == a
    lifetime = datetime.fromisoformat(default_home.json()["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < lifetime <= timedelta(days=7)
    for outside in (b, GLOBAL, str(uuid.uuid4())):
        refused = api.client.post(f"{V1}/tokens", headers=auth, json={"role": "read_only", "domain_id": outside})
        assert refused.status_code == 404 and refused.json()["code"] == "not_found", refused.text
    too_long = api.client.post(f"{V1}/tokens", headers=auth, json={"role": "read_only", "lifetime_days": 0})
    assert too_long.status_code == 422

    listed = api.client.get(f"{V1}/tokens", headers=auth).json()["items"]
    assert {t["domain_id"] for t in listed} == {a, a1}
    assert not any("token" in t or "token_hash" in t for t in listed)
    # The network admin it made may not list, make or revoke tokens: only admins may.
    net = {"Authorization": f"Bearer {made.json()['token']}"}
    refused = api.client.post(f"{V1}/tokens", headers=net, json={"role": "read_only"})
    assert refused.status_code == 403 and "needs role admin" in refused.json()["detail"]
    # A Global admin's tokens are out of A's reach.
    global_token = api.ok("POST", "/tokens", {"name": "ops", "role": "read_only"}, status=201)
    assert api.client.delete(f"{V1}/tokens/{global_token['id']}", headers=auth).status_code == 404


def test_a_token_expires_at_the_end_of_its_lifetime_saying_so_and_what_to_do(db_engine, stub_broker):
    from tests.support.api import start_api
    from tests.support.clock import ManualClock

    clock = ManualClock()
    client, tokens = start_api(db_engine, stub_broker, clock=clock)
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    with client:
        made = client.post(f"{V1}/tokens", json={"name": "short", "role": "read_only", "lifetime_days": 2},
                           headers=admin).json()
        assert made["expires_at"] == (clock() + timedelta(days=2)).isoformat().replace("+00:00", "Z")
        auth = {"Authorization": f"Bearer {made['token']}"}
        assert client.get(f"{V1}/domains", headers=auth).status_code == 200
        listed = {t["id"]: t for t in client.get(f"{V1}/tokens", headers=admin).json()["items"]}
        assert listed[made["id"]]["last_used_at"] is not None and listed[made["id"]]["state"] == "active"

        clock.advance(2 * 86400 - 1)  # its last second
        assert client.get(f"{V1}/domains", headers=auth).status_code == 200
        clock.advance(1)
        expired = client.get(f"{V1}/domains", headers=auth)
        assert expired.status_code == 401 and expired.json()["code"] == "token_expired"
        assert "expired" in expired.json()["detail"] and "certfleet token create" in expired.json()["detail"]
        listed = {t["id"]: t for t in client.get(f"{V1}/tokens", headers=admin).json()["items"]}
        assert listed[made["id"]]["state"] == "expired"


def test_a_revocation_holds_at_once_on_every_controller(api, db_engine, stub_broker):
    from tests.support.api import start_api

    other, _ = start_api(db_engine, stub_broker)  # a second controller on the same database
    made = api.ok("POST", "/tokens", {"name": "leaving", "role": "network_admin"}, status=201)
    auth = {"Authorization": f"Bearer {made['token']}"}
    with other:
        assert other.get(f"{V1}/domains", headers=auth).status_code == 200
        assert api.client.get(f"{V1}/domains", headers=auth).status_code == 200
        assert api.call("DELETE", f"/tokens/{made['id']}").status_code == 204
        for client in (other, api.client):
            refused = client.get(f"{V1}/domains", headers=auth)
            assert refused.status_code == 401 and refused.json()["code"] == "token_revoked", refused.text
            assert "revoked" in refused.json()["detail"]
    # Revoking again changes nothing; the list says it is revoked.
    assert api.call("DELETE", f"/tokens/{made['id']}").status_code == 204
    assert {t["id"]: t for t in api.ok("GET", "/tokens")["items"]}[made["id"]]["state"] == "revoked"
