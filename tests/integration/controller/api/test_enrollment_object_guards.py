"""Guards on an enrollment object's settings that decide where its secret goes and how a CA is
trusted and loaded: a stored EST password or SCEP challenge is never sent to another CA, or
through another trust, or for another user, than it was given for; and only an admin may turn
off the CA server check or change the limits a CA endpoint is protected by."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import Session, select

from services.worker.parameters import trustpoint_configuration
from shared.models import Device, EnrollmentObject
from shared.secrets import SecretBox
from tests.support.api import GLOBAL, SECRET_KEY, problem

OBJECTS = f"/domains/{GLOBAL}/enrollment-objects"
EST = {"name": "vpn-est", "enrollment_type": "est", "enrollment_url": "https://ca.example.com/.well-known/est",
       "username": "fw", "fingerprint": "ab" * 32, "key_type": "ecdsa", "key_size": 256}
SCEP = {"name": "vpn-scep", "enrollment_type": "scep", "enrollment_url": "http://ca.example.com/cgi-bin/pkiclient.exe",
        "key_type": "ecdsa", "key_size": 256}
PASSWORD = "Est-Old-Secret-1"


def stored(api, object_id: str) -> EnrollmentObject:
    with Session(api.engine) as session:
        return session.exec(select(EnrollmentObject).where(EnrollmentObject.id == uuid.UUID(object_id))).one()


def sent_to_device(api, object_id: str) -> dict:
    """The options the worker would configure the device with, secrets included."""
    device = Device(domain_id=uuid.UUID(GLOBAL), name="fw-1", serial="FTD-1", management_url="http://127.0.0.1:1/api")
    return trustpoint_configuration(stored(api, object_id), device, name="vpn", secrets=SecretBox(SECRET_KEY)).options


@pytest.mark.parametrize(("base", "secret", "option", "change"), [
    (EST, "password", "password", {"enrollment_url": "https://attacker.example.net/.well-known/est"}),
    (EST, "password", "password", {"fingerprint": "cd" * 32}),
    (EST, "password", "password", {"ignore_server_validation": True}),
    (EST, "password", "password", {"username": "someone-else"}),
    (SCEP, "challenge_password", "challenge", {"enrollment_url": "http://[2001:db8::66]/scep"}),
])
def test_a_put_that_sends_the_secret_elsewhere_without_a_new_one_drops_it(api, base, secret, option, change):
    """The attack: a writer points the object at their own CA (or trusts any server, or changes
    the user) and leaves the secret out, so the next enrollment would hand them the old one."""
    created = api.enrollment_object(**{**base, secret: PASSWORD})
    path = f"{OBJECTS}/{created['id']}"
    assert created["has_secret"] and sent_to_device(api, created["id"])[option] == PASSWORD

    moved = api.ok("PUT", path, {**base, **change})
    assert moved["has_secret"] is False and api.ok("GET", path)["has_secret"] is False
    assert stored(api, created["id"]).secret_blob is None
    assert option not in sent_to_device(api, created["id"])  # nothing of the old secret goes out

    # With a new secret the change keeps it; the same settings again keep it too.
    given = api.ok("PUT", path, {**base, **change, secret: "New-Secret-2"})
    assert given["has_secret"] is True and sent_to_device(api, created["id"])[option] == "New-Secret-2"
    again = api.ok("PUT", path, {**base, **change, "description": "same CA, same trust"})
    assert again["has_secret"] is True


# --- admin-only settings ------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("ignore_server_validation", True), ("ca_concurrency_limit", 4), ("ca_rate_limit", 2.5),
])
def test_only_admin_may_turn_off_the_server_check_or_set_ca_limits(api, field, value):
    body = {**EST, "password": PASSWORD, field: value}
    refused = problem(api.call("POST", OBJECTS, json=body, role="network_admin"), 403, "forbidden")
    assert refused["detail"].startswith(f"only admin may set {field} (")
    assert "role network_admin may not" in refused["detail"]
    assert api.ok("GET", OBJECTS)["total"] == 0

    created = api.ok("POST", OBJECTS, body, status=201)  # an admin may
    assert created[field] == value
    path = f"{OBJECTS}/{created['id']}"
    # A network_admin may still edit the object, keeping what the admin set ...
    kept = api.ok("PUT", path, {**body, "description": "edited"}, role="network_admin")
    assert kept[field] == value and kept["description"] == "edited"
    # ... but not change it (turning the server check back on is allowed).
    if field == "ignore_server_validation":
        assert api.ok("PUT", path, {**body, field: False}, role="network_admin")[field] is False
        problem(api.call("PUT", path, json=body, role="network_admin"), 403, "forbidden")
    else:
        for other in (value * 2, None):
            changed = problem(api.call("PUT", path, json={**body, field: other}, role="network_admin"),
                              403, "forbidden")
            assert f"only admin may set {field}" in changed["detail"] and f"keep it at {value}" in changed["detail"]
        assert api.ok("GET", path)[field] == value
