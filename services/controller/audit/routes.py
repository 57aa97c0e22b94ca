"""Which route a request is for, read from its method and path alone: the audit log names every
request by its route, also one refused before routing ran (a body over the size cap) or that
matched no route. Pure: built from the routers, as mounted under the API's prefix."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from fastapi import APIRouter
from starlette.routing import compile_path

#: The action of a request that matches no route (an unknown path, or a method the path lacks).
NO_ROUTE = "no_route"
#: Longest path parameter kept: ids and names are short; anything longer is someone's noise.
MAX_PARAMETER = 128
MAX_PATH = 255


@dataclass(frozen=True)
class AuditedRoute:
    name: str
    template: str
    methods: frozenset[str]
    pattern: re.Pattern[str] = field(repr=False)


@dataclass(frozen=True)
class RouteMatch:
    """What a request was for: the route's name and path template, and the path's parameters."""

    action: str
    path: str
    params: dict[str, str]

    @property
    def domain_id(self) -> uuid.UUID | None:
        """The domain the path addresses, if it names one (and it is an id)."""
        return _uuid(self.params.get("domain_id"))

    @property
    def device_id(self) -> uuid.UUID | None:
        return _uuid(self.params.get("device_id"))

    @property
    def target_id(self) -> uuid.UUID | None:
        """The path's most specific id besides the domain: the last one (a delivery of a webhook,
        a job, an object, a token; the device itself for a trustpoint, which is named)."""
        ids = [_uuid(value) for name, value in self.params.items() if name != "domain_id"]
        return next((i for i in reversed(ids) if i is not None), None)


def audited_routes(prefix: str, routers: Iterable[APIRouter]) -> list[AuditedRoute]:
    """The routes of ``routers`` mounted under ``prefix``, in the order the app matches them."""
    routes = []
    for router in routers:
        for route in router.routes:
            methods = getattr(route, "methods", None)
            if methods:
                template = prefix + route.path
                routes.append(AuditedRoute(name=route.name, template=template, methods=frozenset(methods),
                                           pattern=compile_path(template)[0]))
    return routes


def match(routes: Iterable[AuditedRoute], method: str, path: str) -> RouteMatch:
    """The first route the app would call for ``method`` and ``path``; a request that matches
    none keeps its path (cut short), without its query string, which is never recorded."""
    for route in routes:
        if method in route.methods:
            found = route.pattern.match(path)
            if found:
                params = {name: value[:MAX_PARAMETER] for name, value in found.groupdict().items()}
                return RouteMatch(action=route.name, path=route.template, params=params)
    return RouteMatch(action=NO_ROUTE, path=path[:MAX_PATH], params={})


def _uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
