"""The API's documentation works without Internet access: /docs and /redoc load only assets the
controller serves itself; and ``GET /`` says where to go."""

from __future__ import annotations

import re

import pytest

DOC_PAGES = ("/docs", "/redoc")
CONTENT_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",),
                 ".png": ("image/png",)}


def asset_urls(html: str) -> list[str]:
    """Every URL the page loads or links to: src, href, ReDoc's spec-url, and the URL its script
    passes to Swagger UI."""
    return [a or b for a, b in re.findall(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""",
                                          html)]


@pytest.mark.parametrize("page", DOC_PAGES)
def test_the_documentation_pages_load_only_local_assets_which_answer(api, page):
    answer = api.client.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    urls = asset_urls(answer.text)
    assert urls, answer.text
    assert not [u for u in urls if re.match(r"(?i)(https?:)?//", u)], "a page loads from another host"
    assert not re.search(r"(?i)https?://", answer.text)
    assert "/openapi.json" in urls
    assets = [u for u in urls if u.startswith("/docs/assets/")]
    assert {u.rsplit(".", 1)[1] for u in assets} >= ({"js", "css", "png"} if page == "/docs" else {"js", "png"})
    for url in assets:
        fetched = api.client.get(url)
        assert fetched.status_code == 200, url
        kind = fetched.headers["content-type"].split(";")[0]
        assert kind in CONTENT_TYPES["." + url.rsplit(".", 1)[1]], (url, kind)
        assert len(fetched.content) > 1000, url


def test_the_openapi_description_the_docs_load_is_served(api):
    spec = api.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.") and any(path.startswith("/api/v1/") for path in spec["paths"])
    assert "/" not in spec["paths"] and "/docs" not in spec["paths"]  # pages, not API


def test_the_front_door_says_where_to_go(api):
    answer = api.client.get("/")  # no token needed
    assert answer.status_code == 200
    assert answer.json() == {"name": "certfleet controller", "version": "0.1.0", "api": "/api/v1",
                             "docs": "/docs", "redoc": "/redoc", "openapi": "/openapi.json", "health": "/healthz"}
    assert api.client.get("/", headers={"Accept": "*/*"}).json()["api"] == "/api/v1"


def test_a_browser_gets_the_front_door_as_a_page_of_links(api):
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    answer = api.client.get("/", headers={"Accept": accept})
    assert answer.headers["content-type"].startswith("text/html")
    assert set(asset_urls(answer.text)) == {"/docs", "/redoc", "/openapi.json", "/healthz"}
    assert "<code>/api/v1</code>" in answer.text
