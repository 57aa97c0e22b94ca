"""``certfleet alerts list`` and ``certfleet alerts ack`` against the controller's API over real
HTTP on loopback: the table and the JSON, filters by device and domain name, acknowledging, and
the refusals (a cleared alert, a read-only token, an id that is none)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlmodel import Session

from services.cli import alerts as alerts_cli
from services.cli.main import build_parser, main
from services.controller.alerts import store
from shared.alerts import AlertCondition
from shared.enums import AlertCode
from shared.http_thread import ServerThread
from tests.support import alert_rows as rows
from tests.support.clock import START


@pytest.fixture
def cli(api):
    """Runs ``certfleet …`` against the API; returns (exit status, stdout, stderr)."""
    branch = uuid.UUID(api.domain("Branch"))
    edge = rows.device(api.engine, "edge", domain_id=branch)
    core = rows.device(api.engine, "core")
    conditions = [AlertCondition(code=AlertCode.KEYRING_EXPIRED, description=f"keyring of {d.name} is invalid",
                                 domain_id=d.domain_id, device_id=d.id, device_name=d.name) for d in (edge, core)]
    with Session(api.engine) as session:
        store.sync(session, conditions, codes=[AlertCode.KEYRING_EXPIRED], now=START)
        store.sync(session, [AlertCondition(code=AlertCode.CA_UNREACHABLE, description="CA down",
                                            domain_id=core.domain_id, resource="https://ca:443")],
                   codes=[AlertCode.CA_UNREACHABLE], now=START + timedelta(minutes=1))
        session.commit()
    server = ServerThread(api.client.app).start()

    def run(*argv: str, role: str = "admin"):
        status = main([*argv, "--api-url", server.url, "--token", api.tokens[role]])
        return status

    yield run
    server.stop()


def test_the_alerts_group_reaches_its_commands():
    assert build_parser().parse_args(["alerts", "list"]).func is alerts_cli.list_alerts
    assert build_parser().parse_args(["alerts", "ack", "x"]).func is alerts_cli.acknowledge


def test_listing_as_a_table_and_as_json_with_filters(cli, capsys):
    assert cli("alerts", "list", role="read_only") == 0
    table = capsys.readouterr().out
    assert "Alerts (open): 3, newest first" in table
    assert table.index("https://ca:443") < table.index("keyring of")  # newest last_seen first
    assert "keyring of edge is invalid" in table and "F0853" in table

    assert cli("alerts", "list", "--domain", "Branch", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["total"] == 1 and [a["device_name"] for a in listed["items"]] == ["edge"]
    assert cli("alerts", "list", "--device", "core", "--code", "F0853", "--json") == 0
    [core] = json.loads(capsys.readouterr().out)["items"]
    assert core["device_name"] == "core"
    assert cli("alerts", "list", "--severity", "major", "--limit", "1", "--json") == 0
    page = json.loads(capsys.readouterr().out)
    assert (len(page["items"]), page["total"]) == (1, 3)
    assert cli("alerts", "list", "--state", "cleared") == 0
    assert "Alerts (cleared): 0" in capsys.readouterr().out


def test_acknowledging_an_alert_and_the_refusals(cli, capsys):
    assert cli("alerts", "list", "--device", "edge", "--json") == 0
    [edge] = json.loads(capsys.readouterr().out)["items"]

    assert cli("alerts", "ack", edge["id"], role="read_only") == 1
    assert capsys.readouterr().err.startswith("error: forbidden: role read_only may not make this change; this needs "
                                           "role network_admin")
    assert cli("alerts", "ack", edge["id"], "--domain", "Branch", role="network_admin") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"alert {edge['id']} (F0853, major) acknowledged by test network_admin (network_admin) at ")
    assert cli("alerts", "ack", edge["id"]) == 0  # again: nothing changes
    assert "acknowledged by test network_admin (network_admin)" in capsys.readouterr().out
    assert cli("alerts", "list", "--state", "acknowledged", "--json") == 0
    assert [a["id"] for a in json.loads(capsys.readouterr().out)["items"]] == [edge["id"]]

    assert cli("alerts", "ack", "not-an-id") == 2
    assert capsys.readouterr().err.startswith("error: bad_alert_id: 'not-an-id' is not an alert id")
    assert cli("alerts", "ack", str(uuid.uuid4())) == 1
    assert capsys.readouterr().err.startswith("error: alert_not_found: ")
    assert cli("alerts", "list", "--device", "core", "--code", "F0853", "--json") == 0
    [core] = json.loads(capsys.readouterr().out)["items"]
    assert cli("alerts", "ack", core["id"], "--domain", "Branch") == 1  # core is Global's, not Branch's
    assert capsys.readouterr().err.startswith("error: alert_not_found: ")
