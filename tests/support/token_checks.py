"""Checks of API tokens across controller replicas (separate processes on one database)."""

from __future__ import annotations

import httpx

V1 = "/api/v1"


def assert_revocation_holds_on_every_controller(api_urls: list[str], admin_token: str) -> None:
    """A token issued through one controller works on all of them, and once revoked through
    another, is refused by every one at its next request."""
    assert len(api_urls) >= 2, "needs two controllers"
    admin = {"Authorization": f"Bearer {admin_token}"}
    issued = httpx.post(f"{api_urls[0]}{V1}/tokens", json={"name": "leaving", "role": "read_only"},
                        headers=admin, timeout=10)
    assert issued.status_code == 201, issued.text
    auth = {"Authorization": f"Bearer {issued.json()['token']}"}
    for url in api_urls:
        assert httpx.get(f"{url}{V1}/domains", headers=auth, timeout=10).status_code == 200
    revoked = httpx.delete(f"{api_urls[-1]}{V1}/tokens/{issued.json()['id']}", headers=admin, timeout=10)
    assert revoked.status_code == 204, revoked.text
    for url in api_urls:
        refused = httpx.get(f"{url}{V1}/domains", headers=auth, timeout=10)
        assert refused.status_code == 401 and refused.json()["code"] == "token_revoked", (url, refused.text)
