"""``certfleet webhooks`` against the controller's API over real HTTP, and the sample webhook
receiver (examples/webhook_receiver.py) in its own process, fed by the alert relay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlmodel import Session

from services.cli.main import main
from services.controller.alerts.relay import AlertRelay
from services.controller.alerts.sender import signed_headers
from shared.http_thread import ServerThread
from shared.models import GLOBAL_DOMAIN_ID, Webhook
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.support.alert_consumers import raise_alerts
from tests.support.api import GLOBAL
from tests.support.procs import ROOT, free_port
from tests.support.waiting import wait_until


@pytest.fixture
def cli_api(api, monkeypatch) -> Iterator[str]:
    server = ServerThread(api.client.app).start()
    monkeypatch.setenv("CERTFLEET_API_URL", server.url)
    monkeypatch.setenv("CERTFLEET_TOKEN", api.tokens["admin"])
    monkeypatch.delenv("CERTFLEET_WEBHOOK_SECRET", raising=False)
    yield server.url
    server.stop()


def test_webhooks_add_list_deliveries_and_delete(api, cli_api, capsys):
    branch = api.domain("Branch")
    assert main(["webhooks", "add", "https://hooks.example.com/a", "--name", "pager", "--code", "F0853",
                 "--severity", "major", "--secret", "0123456789abcdef-given", "--domain", "Branch"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("webhook ") and "alert events of F0853, major to https://hooks.example.com/a" in said
    assert "0123456789abcdef-given" not in said

    assert main(["webhooks", "add", "https://hooks.example.com/b"]) == 0
    said = capsys.readouterr().out
    secret = said.split("secret: ", 1)[1].split()[0]  # made up, shown this once
    assert len(secret) == 64

    assert main(["webhooks", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {(w["name"], w["domain_id"]) for w in listed} == {("pager", branch), ("", GLOBAL)}
    assert secret not in json.dumps(listed)
    assert main(["webhooks", "list", "--domain", "Branch", "--json"]) == 0
    assert [w["name"] for w in json.loads(capsys.readouterr().out)] == ["pager"]
    assert main(["webhooks", "list"]) == 0
    assert "hooks.example.com/a" in capsys.readouterr().out

    pager = next(w for w in listed if w["name"] == "pager")
    assert main(["webhooks", "deliveries", pager["id"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 0
    assert main(["webhooks", "deliveries", pager["id"], "--state", "dead"]) == 0
    assert "Deliveries of webhook" in capsys.readouterr().out

    assert main(["webhooks", "add", "ftp://hooks.example.com/c", "--secret", "0123456789abcdef"]) == 1
    assert capsys.readouterr().err.startswith("error: webhook_url_invalid: ")
    assert main(["webhooks", "add", "https://hooks.example.com/c", "--secret", "short"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: webhook_secret_too_short: ") and "short" not in err.split(":", 2)[2][:8]

    assert main(["webhooks", "delete", pager["id"], "--domain", GLOBAL]) == 0
    assert capsys.readouterr().out.strip() == f"webhook {pager['id']} deleted"
    assert main(["webhooks", "delete", pager["id"]]) == 1
    assert capsys.readouterr().err.startswith("error: webhook_not_found: ")


def test_the_sample_webhook_receiver_takes_signed_deliveries_and_refuses_others(sqlite_engine, tmp_path):
    secret, port = "sample-receiver-secret-0123", free_port()
    out = tmp_path / "receiver.out"
    env = {**os.environ, "WEBHOOK_SECRET": secret}
    with out.open("w") as sink:
        sample = subprocess.Popen([sys.executable, str(ROOT / "examples" / "webhook_receiver.py"), str(port)],
                                  env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "listening" in out.read_text(), what="the sample receiver to listen")
            url = f"http://127.0.0.1:{port}/alerts"
            body = b'{"id":"x"}'
            forged = signed_headers("not-the-secret-at-all", event_id="x", body=body, timestamp=int(time.time()))
            assert httpx.post(url, content=body, headers=forged).status_code == 401
            stale = signed_headers(secret, event_id="x", body=body, timestamp=int(time.time()) - 3600)
            assert httpx.post(url, content=body, headers=stale).status_code == 401

            settings = Settings(database_url=str(sqlite_engine.url), broker_url="", secret_key="sample-key")
            with Session(sqlite_engine) as session:
                session.add(Webhook(domain_id=GLOBAL_DOMAIN_ID, url=url,
                                    secret_blob=SecretBox("sample-key").seal(secret.encode())))
                session.commit()
            raise_alerts(sqlite_engine, GLOBAL_DOMAIN_ID, 5)
            relay = AlertRelay(sqlite_engine, settings)
            try:
                wait_until(lambda: (relay.run_once(), len(out.read_text().splitlines()) >= 6)[1],
                           what="the events at the sample receiver")
            finally:
                relay.stop()
        finally:
            sample.kill()
            sample.wait(10)
    assert [line.split()[1:3] for line in out.read_text().splitlines()[1:]] == [["raised", "F0853"]] * 5
