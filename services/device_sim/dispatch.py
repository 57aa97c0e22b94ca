"""The simulator's ASGI entry point: device endpoints (``/api/devices/<serial>/...``) straight to
their handlers, everything else through the Starlette application.

A fleet run sends every device several requests per job, and Starlette's general machinery (two
middleware layers, a regular-expression scan over every route, two wrappers per request around
the handler and around each message it sends) cost the simulator as much CPU as the devices'
own work. Here a device endpoint is found with one dictionary look-up on the shape of its path,
its handler is called with the same Request (path parameters included) and its errors are
answered by the application's own exception handlers, as Starlette answers them. The fleet-wide
endpoints, unknown paths, methods an endpoint does not allow (404 and 405 as Starlette words
them) and the lifespan go to the Starlette application unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

DEVICES = "/api/devices/"


def path_shape(path: str) -> tuple[str, dict[str, str]] | None:
    """A device endpoint's path as (shape, path parameters), None for any other path.

    The shape is what follows the serial with the trustpoint's name left out:
    "/api/devices/FTD-000001/trustpoints/vpn/enroll" is ("trustpoints/{name}/enroll",
    {"serial": "FTD-000001", "name": "vpn"}); a route's own template gives the shape it serves.
    A path with an empty segment has no shape: no route matches one.
    """
    if not path.startswith(DEVICES):
        return None
    segments = path[len(DEVICES):].split("/")
    if "" in segments:
        return None
    params = {"serial": segments[0]}
    rest = segments[1:]
    if len(rest) >= 2 and rest[0] == "trustpoints":
        params["name"] = rest[1]
        rest = ["trustpoints", "{name}", *rest[2:]]
    return "/".join(rest), params


class DeviceDispatch:
    """ASGI application: the device routes of ``app`` by the shape of their path, the rest by ``app``."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        #: (method, shape) -> the handler; HEAD is there wherever GET is, as Starlette routes it.
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        for route in app.routes:
            shape = _served_shape(route)
            if shape is not None:
                for method in route.methods or ():
                    self.endpoints[(method, shape)] = route.endpoint  # type: ignore[assignment]
        handlers = dict(app.exception_handlers)
        #: The last resort for an unexpected exception: answered (500), then raised for the
        #: server to log, as Starlette's ServerErrorMiddleware does.
        at_500, at_exception = handlers.pop(500, None), handlers.pop(Exception, None)
        self.server_error: ErrorHandler | None = at_exception or at_500
        self.error_handlers: dict[type, ErrorHandler] = {k: v for k, v in handlers.items() if isinstance(k, type)}
        #: Handlers of HTTPException by status code, which come first.
        self.status_handlers: dict[int, ErrorHandler] = {k: v for k, v in handlers.items() if isinstance(k, int)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            found = path_shape(scope["path"])
            if found is not None:
                endpoint = self.endpoints.get((scope["method"], found[0]))
                if endpoint is not None:
                    scope["app"] = self.app
                    scope["path_params"] = found[1]
                    await self._serve(endpoint, Request(scope, receive), send)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, endpoint: Endpoint, request: Request, send: Send) -> None:
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is not None:
                response = await handler(request, exc)
            else:
                if self.server_error is not None:
                    await (await self.server_error(request, exc))(request.scope, request.receive, send)
                raise
        await response(request.scope, request.receive, send)

    def _handler_for(self, exc: Exception) -> ErrorHandler | None:
        if isinstance(exc, HTTPException) and exc.status_code in self.status_handlers:
            return self.status_handlers[exc.status_code]
        for kind in type(exc).__mro__:
            handler = self.error_handlers.get(kind)
            if handler is not None:
                return handler
        return None


def _served_shape(route: object) -> str | None:
    """The shape of the device paths ``route`` serves, None when it is not a device endpoint this
    module can serve (another path, a parameter other than the serial and the trustpoint's name,
    a handler that is not a coroutine function)."""
    if not isinstance(route, Route) or not inspect.iscoroutinefunction(route.endpoint):
        return None
    found = path_shape(route.path)
    if found is None:
        return None
    shape, params = found
    placeholders_only = all(value == "{" + key + "}" for key, value in params.items())
    if not placeholders_only or "{" in shape.replace("{name}", ""):
        return None
    return shape
