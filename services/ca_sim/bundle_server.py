"""The CA simulator as a CA-bundle source, an aiohttp application served over HTTPS with the
EST server's TLS certificate::

    GET /ca-bundle/latest   the newest published version: {"manifest": b64, "signature": b64}

The store is read at each request, so a version published by ``certfleet ca bundle publish``
in another process is answered from the next request on.
"""

from __future__ import annotations

from aiohttp import web

from services.ca_sim.bundle_store import BundleStore
from services.ca_sim.problems import problem_middleware
from shared.errors import NotFoundError

LATEST = "/ca-bundle/latest"


class BundleHttp:
    def __init__(self, store: BundleStore) -> None:
        self.store = store

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.path.rstrip("/") != LATEST:
            raise NotFoundError(f"{request.path} is not served here; the CA bundle is at {LATEST}", code="not_found")
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET"])
        answer = self.store.latest_answer()
        if answer is None:
            raise NotFoundError("no CA bundle has been published yet", code="no_bundle")
        # Never cached on the way: a receiver must see a new version as soon as it is published.
        return web.Response(body=answer, content_type="application/json", headers={"Cache-Control": "no-store"})


def build_bundle_app(store: BundleStore) -> web.Application:
    app = web.Application(middlewares=[problem_middleware], client_max_size=1024)
    app.router.add_route("*", "/{tail:.*}", BundleHttp(store).dispatch)
    return app
