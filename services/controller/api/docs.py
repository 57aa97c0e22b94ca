"""The API's documentation pages and its front door, open without a token.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts and styles from ``/docs/assets``, served
from the files the ``fastapi-offline`` package installs, not from a public CDN: the pages work on
a management network without Internet access. ``GET /`` says where the API, its documentation
and its OpenAPI description are: JSON, or a short HTML page for a browser.
"""

from __future__ import annotations

from functools import cache
from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

#: Swagger UI's and ReDoc's files (swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png).
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs/assets"
DOCS_URL, REDOC_URL = "/docs", "/redoc"


def install(app: FastAPI, *, api_prefix: str) -> None:
    """Serve the documentation pages, their assets and ``GET /`` on ``app`` (made with
    ``docs_url=None, redoc_url=None``: FastAPI's own pages load from a CDN)."""
    app.state.api_prefix = api_prefix
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    app.include_router(_router())


@cache
def _router() -> APIRouter:
    """Built once per process, like the API's routes: every app of a process shares it."""
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS_URL)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + request.app.openapi_url, title=f"{request.app.title} - API documentation",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # Swagger UI would otherwise show a badge fetched from its public online validator.
            swagger_ui_parameters={"validatorUrl": None})

    @router.get(REDOC_URL)
    def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_redoc_html(
            openapi_url=root + request.app.openapi_url, title=f"{request.app.title} - API documentation",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False)

    @router.get("/")
    def front_door(request: Request):
        root, app = _root(request), request.app
        where = {"name": app.title, "version": app.version, "api": root + app.state.api_prefix,
                 "docs": root + DOCS_URL, "redoc": root + REDOC_URL, "openapi": root + app.openapi_url,
                 "health": root + "/healthz"}
        if _prefers_html(request.headers.get("accept", "")):
            return HTMLResponse(_front_page(where))
        return JSONResponse(where)

    return router


def _root(request: Request) -> str:
    """The path the controller is served under behind a proxy (uvicorn's --root-path), or ''."""
    return request.scope.get("root_path", "").rstrip("/")


def _prefers_html(accept: str) -> bool:
    """A browser asks for text/html before JSON; curl (``*/*``) and API clients get JSON."""
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if "text/html" not in types:
        return False
    return "application/json" not in types or types.index("text/html") < types.index("application/json")


def _front_page(where: dict[str, str]) -> str:
    links = [("API documentation (Swagger UI)", where["docs"]), ("API documentation (ReDoc)", where["redoc"]),
             ("OpenAPI description", where["openapi"]), ("Health", where["health"])]
    items = "".join(f'<li><a href="{escape(url)}">{escape(text)}</a></li>' for text, url in links)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{escape(where['name'])}</title></head>"
            f"<body><h1>{escape(where['name'])} {escape(where['version'])}</h1>"
            f"<p>The REST API is under <code>{escape(where['api'])}</code>; every call there needs a token "
            f"(<code>Authorization: Bearer …</code>).</p><ul>{items}</ul></body></html>")
