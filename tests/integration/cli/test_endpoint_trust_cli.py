"""``certfleet endpoints`` and ``certfleet device trust|show`` against the controller's API over real
HTTP: the allow-list managed by an admin homed at Global, a device approved with its credential (read
from a file, never printed), and what a network admin is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from services.cli.main import main
from shared.http_thread import ServerThread
from tests.support.api import GLOBAL

CREDENTIAL = "cli-device-credential-0042-0123456789"


@pytest.fixture
def cli_api(api, monkeypatch) -> Iterator[str]:
    server = ServerThread(api.client.app).start()
    monkeypatch.setenv("CERTFLEET_API_URL", server.url)
    monkeypatch.setenv("CERTFLEET_TOKEN", api.tokens["admin"])
    yield server.url
    server.stop()


def test_endpoints_allow_list_and_remove(api, cli_api, capsys, monkeypatch):
    assert main(["endpoints", "list"]) == 0
    assert "no management endpoint is allowed" in capsys.readouterr().out
    assert main(["endpoints", "allow", "https", "10.20.0.0/16", "--port", "8443", "--description", "branch mgmt"]) == 0
    assert capsys.readouterr().out.startswith("allowed https://10.20.0.0/16 port 8443 (entry ")
    assert main(["endpoints", "allow", "http", "2001:DB8:40::/48"]) == 0
    capsys.readouterr()
    assert main(["endpoints", "allow", "https", "10.20.3.4/16"]) == 1
    assert capsys.readouterr().err.startswith("error: invalid_endpoint: host '10.20.3.4/16' is not an IP address or "
                                              "network")
    assert main(["endpoints", "allow", "https", "10.20.0.0/16", "--port", "8443"]) == 1
    assert capsys.readouterr().err.startswith("error: duplicate_endpoint: https://10.20.0.0/16 port 8443 is already")

    assert main(["endpoints", "list", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["scheme"], e["host"], e["port"], e["created_by"]) for e in entries] == [
        ("http", "2001:db8:40::/48", None, "test admin (admin)"), ("https", "10.20.0.0/16", 8443, "test admin (admin)")]
    assert main(["endpoints", "list"]) == 0
    assert "branch mgmt" in capsys.readouterr().out

    monkeypatch.setenv("CERTFLEET_TOKEN", api.tokens["network_admin"])
    assert main(["endpoints", "remove", entries[0]["id"]]) == 1
    assert capsys.readouterr().err.startswith("error: forbidden: role network_admin may not use this; this needs "
                                              "role admin")
    monkeypatch.setenv("CERTFLEET_TOKEN", api.tokens["admin"])
    assert main(["endpoints", "remove", entries[0]["id"]]) == 0
    assert main(["endpoints", "remove", entries[0]["id"]]) == 1
    assert "error: endpoint_not_found" in capsys.readouterr().err


def test_device_trust_with_a_credential_file_then_withdrawn(api, cli_api, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CERTFLEET_TOKEN", api.tokens["network_admin"])
    device = api.ok("POST", f"/domains/{GLOBAL}/devices", {
        "name": "fw-TRUST-1", "serial": "TRUST-1", "management_url": "http://198.51.100.7/api/devices/TRUST-1"},
        status=201, role="network_admin")
    assert device["endpoint_trust"]["trusted"] is False
    assert main(["device", "show", "TRUST-1"]) == 0
    shown = capsys.readouterr().out
    assert "not trusted: no secret goes to it" in shown and "certfleet device trust TRUST-1" in shown
    (tmp_path / "credential").write_text(CREDENTIAL + "\n")
    assert main(["device", "trust", "TRUST-1", "--credential-file", str(tmp_path / "credential")]) == 1
    assert capsys.readouterr().err.startswith("error: forbidden: ")

    monkeypatch.setenv("CERTFLEET_TOKEN", api.tokens["admin"])
    assert main(["device", "trust", "TRUST-1", "--credential-file", str(tmp_path / "credential")]) == 0
    said = capsys.readouterr().out
    assert said == "fw-TRUST-1 approved at http://198.51.100.7/api/devices/TRUST-1, with its credential\n"
    assert main(["device", "show", "TRUST-1"]) == 0
    shown = capsys.readouterr().out
    assert "trusted: approved by test admin (admin)" in shown and CREDENTIAL not in shown
    assert main(["device", "trust", "TRUST-1", "--withdraw"]) == 0
    assert "withdrawn" in capsys.readouterr().out
    trust = api.ok("GET", f"/domains/{device['domain_id']}/devices/{device['id']}")["endpoint_trust"]
    assert (trust["trusted"], trust["has_credential"]) == (False, True)
    # Approved again without a credential: the one stored is kept.
    assert main(["device", "trust", "TRUST-1"]) == 0
    assert capsys.readouterr().out.endswith(", with its credential\n")
