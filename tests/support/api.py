"""The controller's API as a test client sees it: real HTTP through FastAPI's TestClient, a real
database, tokens for every role, and helpers to check problem answers and finish jobs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dramatiq
import httpx
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, select

from services.controller.api.auth import create_token
from services.controller.app import create_app
from shared.clock import utcnow
from shared.enrollment import EnrollmentParameters
from shared.enums import Role
from shared.events import JOBS_QUEUE
from shared.models import GLOBAL_DOMAIN_ID, Certificate, Job, Trustpoint
from shared.pki import DeviceIdentity, describe, generate_private_key, self_signed_certificate, to_pem
from shared.settings import Settings
from shared.states import Status, transition

SECRET_KEY = "api-test-secret-key"
GLOBAL = str(GLOBAL_DOMAIN_ID)
V1 = "/api/v1"


# --- the API under test -----------------------------------------------------------------------


@dataclass
class Api:
    client: TestClient
    engine: object
    broker: dramatiq.Broker
    tokens: dict[str, str]

    def call(self, method: str, path: str, *, role: str | None = "admin", **kwargs) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return self.client.request(method, V1 + path, headers=headers, **kwargs)

    def get(self, path: str, **kw) -> httpx.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: dict | None = None, **kw) -> httpx.Response:
        return self.call("POST", path, json=body, **kw)

    def ok(self, method: str, path: str, body: dict | None = None, *, status: int = 200, **kw) -> dict:
        response = self.call(method, path, json=body, **kw)
        assert response.status_code == status, response.text
        return response.json() if response.content else {}

    # Things most tests need.
    def domain(self, name: str, parent: str = GLOBAL) -> str:
        return self.ok("POST", "/domains", {"name": name, "parent_id": parent}, status=201)["id"]

    def device(self, serial: str, *, domain: str = GLOBAL, **fields) -> dict:
        body = {
            "name": f"fw-{serial}",
            "model": "FTD 3110",
            "serial": serial,
            "ip_address": "192.0.2.10",
            "fqdn": f"{serial.lower()}.example.com",
            "management_url": f"http://127.0.0.1:8400/api/devices/{serial}",
            **fields,
        }
        return self.ok("POST", f"/domains/{domain}/devices", body, status=201)

    def enrollment_object(self, name: str, *, domain: str = GLOBAL, **fields) -> dict:
        body = {
            "name": name,
            "enrollment_type": "self_signed",
            "key_type": "ecdsa",
            "key_size": 256,
            **fields,
        }
        return self.ok("POST", f"/domains/{domain}/enrollment-objects", body, status=201)

    def add(self, device_id: str, object_id: str, *, domain: str = GLOBAL) -> dict:
        return self.ok(
            "POST",
            f"/domains/{domain}/devices/{device_id}/trustpoints",
            {"enrollment_object_id": object_id},
            status=202,
        )


def make_settings(engine) -> Settings:
    return Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        secret_key=SECRET_KEY,
        job_lease_seconds=60,
        job_max_attempts=4,
    )


def start_api(engine, broker, settings: Settings | None = None, *,
              clock: Callable[[], datetime] = utcnow) -> tuple[TestClient, dict[str, str]]:
    """A controller app on ``engine`` and a token per role, made at ``clock``'s time."""
    app = create_app(settings or make_settings(engine), engine=engine, broker=broker, clock=clock)
    with Session(engine) as session:
        tokens = {role.value: create_token(session, role=role, name=f"test {role.value}", now=clock())
                  for role in Role}
        session.commit()
    return TestClient(app, raise_server_exceptions=False), tokens


def published(broker) -> list[dramatiq.Message]:
    """Drain and decode what the controller put on the jobs queue."""
    queue = broker.queues.get(JOBS_QUEUE)
    messages = []
    while queue is not None and not queue.empty():
        messages.append(dramatiq.Message.decode(queue.get_nowait()))
    return messages


def problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["type"] == f"urn:certfleet:problem:{code}"
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# --- the worker's side, done by hand --------------------------------------------------------------


def finish_jobs(engine, *, available: bool = True) -> None:
    """What a worker does when it is done: the job succeeds and the statuses move."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        session.execute(
            update(Job)
            .where(Job.state.in_(("queued", "running")))
            .values(state="succeeded", finished_at=now, lease_expires_at=None)
        )
        if available:
            for tp in session.exec(select(Trustpoint)).all():
                if Status.IN_PROGRESS.value in (tp.ca_status, tp.identity_status):
                    transition(tp, now=now, ca=Status.AVAILABLE, identity=Status.AVAILABLE)
                    session.add(tp)
        session.commit()


def install_certificate(
    engine, trustpoint_id: str, *, expires_in_days: float, role: str = "identity", position: int = 0
) -> Certificate:
    """An installed certificate whose notAfter is ``expires_in_days`` from now (negative: expired)."""
    key = generate_private_key("ecdsa", 256)
    params = EnrollmentParameters(
        name="tp",
        enrollment_type="self_signed",
        key_type="ecdsa",
        key_size=256,
        validity_days=1,
        include_fqdn=True,
    )
    start = datetime.now(UTC) + timedelta(days=expires_in_days - 1)
    cert = self_signed_certificate(
        key,
        params,
        DeviceIdentity(serial="S", fqdn="fw.example.com"),
        now=start,
        serial=uuid.uuid4().int >> 64,
    )
    info = describe(cert)
    row = Certificate(
        trustpoint_id=uuid.UUID(trustpoint_id),
        role=role,
        chain_position=position,
        pem=to_pem(cert),
        subject=info.subject,
        issuer=info.issuer,
        serial_number=info.serial_number,
        not_before=info.not_before,
        not_after=info.not_after,
        key_algorithm=info.key_algorithm,
        key_size=info.key_size,
        signature_algorithm=info.signature_algorithm,
        fingerprint_sha256=info.fingerprint_sha256,
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(row)
        session.commit()
    return row


# --- operations endpoints and authentication ----------------------------------------------------
