"""``certfleet audit`` against the controller's API over real HTTP on loopback (the table, the JSON,
the filters, a token's home domain by default), and the commands that change the database
directly (``token create|revoke``, ``secrets rotate``) recording themselves as done by the
operating-system user who ran them, never with the token or a key."""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from services.cli import audit as audit_cli
from services.cli.main import build_parser, main
from services.controller.audit.entries import local_operator
from shared.http_thread import ServerThread
from shared.models import GLOBAL_DOMAIN_ID, AuditEntry, Webhook
from shared.secrets import SecretBox
from tests.support.api import V1


@pytest.fixture
def server(api):
    server = ServerThread(api.client.app).start()
    yield server
    server.stop()


def test_the_audit_command_is_wired_and_reads_times_and_ages():
    assert build_parser().parse_args(["audit"]).func is audit_cli.main
    now = datetime(2030, 1, 31, 12, 0, tzinfo=UTC)
    assert audit_cli.when("24h", now=now) == now - timedelta(hours=24)
    assert audit_cli.when("30m", now=now) == now - timedelta(minutes=30)
    assert audit_cli.when("7d", now=now) == now - timedelta(days=7)
    assert audit_cli.when("2030-01-02") == datetime(2030, 1, 2, tzinfo=UTC)
    assert audit_cli.when("2030-01-02T08:00+02:00") == datetime(2030, 1, 2, 6, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="neither a time"):
        audit_cli.when("yesterday")


def test_listing_the_log_as_a_table_and_as_json_with_filters(api, server, capsys):
    branch = api.domain("Branch")
    edge = api.device("EDGE-1", domain=branch)
    api.ok("PATCH", f"/domains/{branch}/devices/{edge['id']}", {"model": "FTD 3110"})
    api.call("POST", f"/domains/{branch}/devices", role=None, json={})  # refused: no token
    branch_token = api.ok("POST", "/tokens", {"name": "branch reader", "role": "read_only", "domain_id": branch},
                          status=201)

    def audit(*argv: str, token: str = api.tokens["read_only"]) -> int:
        return main(["audit", *argv, "--api-url", server.url, "--token", token])

    assert audit() == 0
    table = capsys.readouterr().out
    assert "Audit log of Global: 5, newest first (times in UTC)" in table
    assert table.index("create_token") < table.index("update_device") < table.index("create_domain")
    assert "test admin (admin)" in table and "nobody (no valid token)" in table
    assert "failed 401 unauthorized" in table and "ok 201" in table and "Branch" in table

    # Filters; a token homed at Branch lists Branch by default (Global is out of its reach).
    assert audit("--device", "fw-EDGE-1", "--json") == 0
    [changed] = json.loads(capsys.readouterr().out)["items"]
    assert (changed["action"], changed["device_id"]) == ("update_device", edge["id"])
    assert audit("--outcome", "failed", "--json", token=branch_token["token"]) == 0
    [refused] = json.loads(capsys.readouterr().out)["items"]
    assert (refused["action"], refused["status"], refused["token_id"]) == ("create_device", 401, None)
    assert audit("--action", "create_device", "--since", "1h", "--domain", "Branch", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["total"] == 2 and {e["outcome"] for e in listed["items"]} == {"ok", "failed"}
    admin_id = next(t["id"] for t in api.ok("GET", "/tokens")["items"] if t["name"] == "test admin")
    assert audit("--token-id", admin_id, "--json") == 0
    by_admin = json.loads(capsys.readouterr().out)["items"]
    assert [e["action"] for e in by_admin] == ["create_token", "update_device", "create_device", "create_domain"]
    assert audit("--target", edge["id"], "--limit", "1", "--json") == 0
    page = json.loads(capsys.readouterr().out)
    assert (len(page["items"]), page["total"]) == (1, 2)  # a page shows its total
    assert audit("--until", "2000-01-01") == 0
    assert "Audit log of Global: 0" in capsys.readouterr().out

    with pytest.raises(SystemExit) as usage:
        audit("--since", "yesterday")
    assert usage.value.code == 2 and "neither a time" in capsys.readouterr().err
    assert audit("--domain", "Nowhere") == 1
    assert "error: unknown_domain: " in capsys.readouterr().err


def test_token_commands_and_secret_rotation_record_the_operator_never_a_secret(db_engine, stub_broker, monkeypatch,
                                                                              capsys, tmp_path):
    monkeypatch.setenv("CERTFLEET_DATABASE_URL", db_engine.url.render_as_string(hide_password=False))
    with Session(db_engine) as session:
        session.add(Webhook(domain_id=GLOBAL_DOMAIN_ID, url="https://hooks.example.net/x",
                            secret_blob=SecretBox("old-installation-key").seal(b"webhook-signing-secret")))
        session.commit()

    assert main(["token", "create", "--role", "admin", "--name", "first admin"]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["token", "list"]) == 0
    token_id = next(line.split()[0] for line in capsys.readouterr().out.splitlines() if line.endswith("first admin"))
    assert main(["token", "revoke", token_id]) == 0
    (tmp_path / "old.key").write_text("old-installation-key\n")
    (tmp_path / "new.key").write_text("new-installation-key\n")
    assert main(["secrets", "rotate", "--old-key-file", str(tmp_path / "old.key"),
                 "--new-key-file", str(tmp_path / "new.key")]) == 0
    assert main(["token", "revoke", str(uuid.uuid4())]) == 1  # refused: nothing changed, nothing recorded
    capsys.readouterr()

    with Session(db_engine) as session:
        made, revoked, rotated = session.exec(select(AuditEntry).order_by(AuditEntry.at)).all()
    operator = local_operator()
    for entry in (made, revoked, rotated):
        assert (entry.channel, entry.operator, entry.outcome, entry.token_id, entry.status) == (
            "cli", operator, "ok", None, None)
        assert entry.domain_id == GLOBAL_DOMAIN_ID
        stored = json.dumps(entry.model_dump(mode="json"))
        assert token not in stored and "installation-key" not in stored and "webhook-signing" not in stored
    assert (made.action, str(made.target_id), made.details) == (
        "token_create", token_id, {"role": "admin", "name": "first admin"})
    assert (revoked.action, str(revoked.target_id)) == ("token_revoke", token_id)
    assert (rotated.action, rotated.details) == ("secrets_rotate", {"rotated": 1, "already": 0})

    # The API shows them with the rest.
    from tests.support.api import start_api

    client, tokens = start_api(db_engine, stub_broker)
    with client:
        page = client.get(f"{V1}/domains/{GLOBAL_DOMAIN_ID}/audit", params={"target_id": token_id},
                          headers={"Authorization": f"Bearer {tokens['read_only']}"}).json()
    assert [(e["action"], e["operator"]) for e in page["items"]] == [("token_revoke", operator),
                                                                     ("token_create", operator)]
