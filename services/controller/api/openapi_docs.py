"""Every answer of the API in its OpenAPI document, without a line per route.

FastAPI documents a route's success and a 422 in its own JSON shape; the controller answers
errors as ``application/problem+json`` (:mod:`.problems`) with statuses FastAPI does not know
of. When the document is built, each ``/api/v1`` operation gets the error answers it can give,
each a :class:`~.problems.Problem` with the stable codes that route can answer:

- those its endpoint and dependencies raise, read from the code (:mod:`.error_codes`);
- 401 where a token is needed, 422 ``validation_error`` where it takes input, 400 ``invalid_body``
  and 413 ``request_too_large`` where it takes a body, 404 ``not_found`` for a path that names
  something, 409 ``conflict`` on a change meeting a concurrent one, 503 ``database_unavailable``.

A status whose codes are all known lists them as an enum; one with a code chosen at run time
(a CA's or a device's answer passed on) lists those known in its description. A success answer
whose media type has no schema (a PEM or PKCS#12 download) is described as text or binary.
Routes added later are covered as they are: nothing here names a route.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant

from services.controller.api.error_codes import models_raise, raised_by
from services.controller.api.problems import MEDIA_TYPE, Problem

PROBLEM_REF = "#/components/schemas/Problem"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
#: What each error status means here, for its description.
_MEANING = {
    400: "the body could not be read as JSON",
    401: "no token, or one that is not valid, expired or revoked",
    403: "the token's role may not do this",
    404: "not found in the token's reach (or does not exist)",
    409: "refused in the current state; the detail says what to do",
    413: "the request body is too large",
    415: "the body's media type is not one this route reads",
    422: "the input is not valid",
    502: "a device, CA or source this needed answered with an error or not at all",
    503: "the database is unavailable; retry in a moment",
}
#: Media types of answers whose content is text; any other without a schema is binary.
_TEXT_TYPES = ("text/", "application/x-pem-file")


def install(app: FastAPI, *, api_prefix: str) -> None:
    """Describe every error answer in ``app``'s OpenAPI document (built on first request, and again
    whenever FastAPI rebuilds it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        if "Problem" not in schema.get("components", {}).get("schemas", {}):
            describe(schema, app, api_prefix=api_prefix)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe(schema: dict[str, Any], app: FastAPI, *, api_prefix: str) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in _problem_schemas().items():
        components[name] = definition
    for route in routing.iter_route_contexts(app.routes):
        if not isinstance(route.original_route, routing.APIRoute) or not route.include_in_schema:
            continue
        for method in sorted(route.methods or ()):
            operation = schema.get("paths", {}).get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            _fill_schemas(operation)
            if route.path_format.startswith(api_prefix):
                responses = operation["responses"]
                for status, codes in error_answers(route, method, operation).items():
                    responses[str(status)] = _answer(responses.get(str(status)), status, codes)
                operation["responses"] = dict(sorted(responses.items()))
    _drop_unused(schema, ("HTTPValidationError", "ValidationError"))


def error_answers(route: Any, method: str, operation: dict[str, Any]) -> dict[int, set[str | None]]:
    """status -> the codes the operation can answer with it (None: some chosen at run time)."""
    found = raised_by(_callables(route.dependant, method))
    found |= models_raise(field.field_info.annotation for field in route.dependant.body_params)
    answers: dict[int, set[str | None]] = defaultdict(set)
    for raised in found:
        if 400 <= raised.status < 600 and raised.status != 500:  # a 500 is a bug, not an answer
            answers[raised.status].add(raised.code)
    for status, code in _framework_answers(route, method, operation):
        answers[status].add(code)
    return answers


def _framework_answers(route: Any, method: str, operation: dict[str, Any]) -> Iterator[tuple[int, str]]:
    """The answers the framework and the controller's middleware give, whatever the route's code does."""
    if operation.get("security"):
        yield 401, "unauthorized"
    if operation.get("parameters") or operation.get("requestBody"):
        yield 422, "validation_error"
    if route.body_field is not None:  # FastAPI reads it: a body that is not even text is a 400
        yield 400, "invalid_body"
    if operation.get("requestBody"):
        yield 413, "request_too_large"
    if "{" in route.path_format:  # a path value with a '/' matches no route at all
        yield 404, "not_found"
    if method not in _READS:  # a write meeting a concurrent one (problems.integrity_problem)
        yield 409, "conflict"
    yield 503, "database_unavailable"


def _callables(dependant: Dependant, method: str) -> Iterator[Any]:
    """The endpoint and every dependency. A ``writes_need`` role check refuses only writes: on a
    read it adds nothing but the authentication it depends on."""
    refuses_writes_only = (getattr(dependant.call, "__name__", "") or "").startswith("writes_need")
    if dependant.call is not None and not (refuses_writes_only and method in _READS):
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _callables(sub, method)


def _answer(declared: dict[str, Any] | None, status: int, codes: set[str | None]) -> dict[str, Any]:
    known = sorted(code for code in codes if code is not None)
    schema: dict[str, Any] = {"$ref": PROBLEM_REF}
    if None not in codes:
        schema = {"allOf": [schema, {"type": "object", "properties": {"code": {"enum": known}}}]}
    listed = ", ".join(f"`{code}`" for code in known)
    more = " and others passed on from a device or CA" if None in codes else ""
    description = (declared or {}).get("description") or f"{_phrase(status)}: {_MEANING.get(status, 'refused')}"
    return {**(declared or {}), "description": f"{description}. Codes: {listed}{more}.",
            "content": {MEDIA_TYPE: {"schema": schema}}}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _fill_schemas(operation: dict[str, Any]) -> None:
    """An answer declared with a media type but no schema gets one: a problem, or a file download
    (text or binary)."""
    for answer in operation.get("responses", {}).values():
        for media_type, content in (answer.get("content") or {}).items():
            if content.get("schema") or media_type.endswith("json") and media_type != MEDIA_TYPE:
                continue  # set, or any JSON
            if media_type == MEDIA_TYPE:
                content["schema"] = {"$ref": PROBLEM_REF}
            elif media_type.startswith(_TEXT_TYPES):
                content["schema"] = {"type": "string"}
            else:
                content["schema"] = {"type": "string", "format": "binary"}


def _problem_schemas() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {**definitions, "Problem": schema}


def _drop_unused(schema: dict[str, Any], names: tuple[str, ...]) -> None:
    components = schema.get("components", {}).get("schemas", {})
    for name in names:
        if name in components:
            definition = components.pop(name)
            if f'"#/components/schemas/{name}"' in json.dumps(schema):
                components[name] = definition  # still used, outside the API

