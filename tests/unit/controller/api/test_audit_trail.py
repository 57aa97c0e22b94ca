"""The audit middleware around a small app of its own, on a real SQLite database: the entry holds
the injected clock's time, is in the database before the client gets the answer's first byte,
is written for an answer the app never gave (500), and a database that refuses it fails nothing."""

from __future__ import annotations

import uuid

import anyio
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session, select
from structlog.testing import capture_logs

from services.controller.api import audit_trail, problems
from services.controller.api.audit_trail import AuditTrail
from services.controller.audit.routes import audited_routes
from shared.enums import Role
from shared.errors import ConflictError
from shared.models import GLOBAL_DOMAIN_ID, AuditEntry
from tests.support.clock import START, ManualClock

TOKEN_ID = uuid.uuid4()


def signed_in(request: Request) -> None:
    audit_trail.identify(request, token_id=TOKEN_ID, name="ops", role=Role.ADMIN, home_domain_id=GLOBAL_DOMAIN_ID)


router = APIRouter(prefix="/things", dependencies=[Depends(signed_in)])
MADE = uuid.uuid4()


@router.post("", status_code=201)
def create_thing(request: Request):
    audit_trail.notes(request)["colour"] = "green"
    return {"id": str(MADE), "secret": "never-kept"}


@router.put("/{thing_id}")
def replace_thing(thing_id: uuid.UUID):
    raise ConflictError("it changed meanwhile", code="thing_changed")


@router.delete("/{thing_id}")
def delete_thing(thing_id: uuid.UUID):
    raise RuntimeError("a bug")


@router.get("")
def list_things():
    return JSONResponse([])


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def app(sqlite_engine, clock):
    app = FastAPI()
    problems.install(app)
    app.include_router(router, prefix="/api/v1")
    app.add_middleware(AuditTrail, engine=sqlite_engine, prefix="/api/v1", clock=clock,
                       routes=audited_routes("/api/v1", [router]))
    return app


def entries(engine) -> list[AuditEntry]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.at)).all())


def test_each_change_is_recorded_at_the_injected_time_and_reads_are_not(app, sqlite_engine, clock):
    client = TestClient(app, raise_server_exceptions=False)
    assert client.post("/api/v1/things").status_code == 201
    clock.advance(60)
    thing = uuid.uuid4()
    assert client.put(f"/api/v1/things/{thing}?password=in-the-query").status_code == 409
    clock.advance(60)
    with capture_logs():  # the bug's traceback, not rendered
        assert client.delete(f"/api/v1/things/{thing}").status_code == 500
    assert client.get("/api/v1/things").status_code == 200
    assert client.post("/elsewhere").status_code == 404  # outside the API: not its business

    made, changed, crashed = entries(sqlite_engine)
    assert [e.at for e in (made, changed, crashed)] == [START, START.replace(minute=1), START.replace(minute=2)]
    assert (made.action, made.status, made.outcome, made.target_id, made.details) == (
        "create_thing", 201, "ok", MADE, {"colour": "green"})
    assert (made.token_id, made.token_name, made.role, made.domain_id) == (TOKEN_ID, "ops", "admin",
                                                                          GLOBAL_DOMAIN_ID)
    assert (changed.action, changed.status, changed.outcome, changed.error_code) == (
        "replace_thing", 409, "failed", "thing_changed")
    assert (changed.path, changed.targets, changed.target_id) == (
        "/api/v1/things/{thing_id}", {"thing_id": str(thing)}, thing)
    assert (crashed.action, crashed.status, crashed.error_code) == ("delete_thing", 500, "internal_error")
    assert "never-kept" not in repr(made.model_dump()) and "in-the-query" not in repr(changed.model_dump())


def test_the_entry_is_in_the_database_before_the_answer_leaves(app, sqlite_engine):
    seen_by_client: list[tuple[str, int]] = []

    async def server_send(message) -> None:
        # What a client could read at this moment, if the answer's first byte went out now.
        seen_by_client.append((message["type"], len(entries(sqlite_engine))))

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/api/v1/things", "raw_path": b"/api/v1/things",
             "query_string": b"", "headers": [], "root_path": "", "scheme": "http", "server": ("test", 80),
             "http_version": "1.1", "client": ("127.0.0.1", 1)}
    anyio.run(app, scope, receive, server_send)
    assert seen_by_client[0] == ("http.response.start", 1)


def test_a_database_that_refuses_the_entry_fails_nothing_and_says_so(app, sqlite_engine):
    with sqlite_engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_entry"))
    client = TestClient(app, raise_server_exceptions=False)
    with capture_logs() as logs:
        answer = client.post("/api/v1/things")
    assert answer.status_code == 201 and answer.json()["id"] == str(MADE)
    [refused] = [line for line in logs if line["event"] == "audit entry not written"]
    assert refused["action"] == "create_thing" and refused["log_level"] == "error"
