"""``certfleet token create|list|revoke``: on the database directly (the first admin token needs no
API), and what they make the API does at once."""

from __future__ import annotations

from services.cli.main import main
from tests.support.api import V1, start_api


def test_tokens_are_created_for_a_domain_listed_and_revoked_offline(db_engine, stub_broker, monkeypatch, capsys):
    monkeypatch.setenv("CERTFLEET_DATABASE_URL", db_engine.url.render_as_string(hide_password=False))
    client, tokens = start_api(db_engine, stub_broker)
    with client:
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        east = client.post(f"{V1}/domains", headers=admin, json={"name": "East"}).json()["id"]

        assert main(["token", "create", "--role", "network_admin", "--domain", "East", "--days", "3",
                     "--name", "east ops"]) == 0
        token = capsys.readouterr().out.strip()
        auth = {"Authorization": f"Bearer {token}"}
        # Homed at East: it sees East only, and may not make domains (an admin's).
        assert [d["name"] for d in client.get(f"{V1}/domains", headers=auth).json()["items"]] == ["East"]
        assert client.post(f"{V1}/domains", headers=auth, json={"name": "x"}).status_code == 403

        assert main(["token", "list"]) == 0
        listing = capsys.readouterr().out
        line = next(row for row in listing.splitlines() if row.endswith("east ops"))
        token_id, state, role, domain = line.split()[:4]
        assert (state, role, domain) == ("active", "network_admin", "East")
        assert token not in listing

        assert main(["token", "revoke", token_id]) == 0
        assert "revoked" in capsys.readouterr().out
        refused = client.get(f"{V1}/domains/{east}", headers=auth)
        assert refused.status_code == 401 and refused.json()["code"] == "token_revoked"

    assert main(["token", "create", "--role", "admin", "--domain", "Nowhere"]) == 1
    assert "unknown_domain" in capsys.readouterr().err
    assert main(["token", "create", "--role", "admin", "--days", "0"]) != 0
    assert "--days" in capsys.readouterr().err
    assert main(["token", "revoke", "not-an-id"]) != 0
    assert "invalid_token_id" in capsys.readouterr().err
