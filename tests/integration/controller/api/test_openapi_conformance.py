"""The API answers as its OpenAPI document says, checked by schemathesis against the live
``/openapi.json`` of a controller on loopback (uvicorn in a thread, its own PostgreSQL database, the
in-process broker), with an admin token.

Every operation the document lists is generated from it (so a new route is in without editing this
file), a few cases each, seeded: no answer may be a 5xx, and every status and media type must be
documented; schema-valid input must be taken, schema-violating input refused, answers must match
their schemas. ``CERTFLEET_SCHEMATHESIS_EXAMPLES=100`` runs it long (the README says so).

With an admin token schemathesis creates, changes and deletes things; all of it lands in this
test's own database, and jobs on a broker no worker reads.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance, unsupported_method
from sqlmodel import Session, select

from services.controller.api.auth import create_token
from services.controller.app import create_app
from shared.enums import Role
from shared.http_thread import ServerThread
from shared.models import ApiToken
from tests.support.api import make_settings

pytestmark = pytest.mark.postgres

#: Generated cases per operation: a handful keeps the suite fast. Set, it searches longer, and adds
#: schemathesis's coverage phase (every boundary and invalid value the schemas name, every method
#: a path does not take: about a minute on two cores).
EXAMPLES = int(os.environ.get("CERTFLEET_SCHEMATHESIS_EXAMPLES", "3"))
LONG = "CERTFLEET_SCHEMATHESIS_EXAMPLES" in os.environ
SEED = 15


class AdminToken:
    """The credentials schemathesis sends: an admin token, issued again when a generated
    ``DELETE /tokens/{id}`` revoked the one it had (``GET /tokens`` lists it)."""

    engine: Any = None
    token: str | None = None

    def get(self, case, context) -> str:
        with Session(self.engine) as session:
            row = session.exec(select(ApiToken).where(ApiToken.name == "schemathesis")
                               .order_by(ApiToken.created_at.desc())).first()
            if AdminToken.token is None or row is None or row.revoked_at is not None:
                AdminToken.token = create_token(session, role=Role.ADMIN, name="schemathesis")
                session.commit()
        return AdminToken.token

    def set(self, case, data: str, context) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def controller(pg_engine, stub_broker) -> Iterator[str]:
    app = create_app(make_settings(pg_engine), engine=pg_engine, broker=stub_broker)
    server = ServerThread(app).start()
    AdminToken.engine, AdminToken.token = pg_engine, None
    try:
        yield server.url
    finally:
        server.stop()
        AdminToken.engine = AdminToken.token = None


@pytest.fixture
def api_schema(controller):
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        "checks": {
            # 502 is the answer when a device, CA or inventory the request itself named does not answer
            # (an import from an inventory URL that resolves nowhere): the controller did not fail.
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "502"]},
            # 413: a body over the route's cap (x-max-request-bytes) is refused as too large, rightly.
            "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422,
                                                              428, 429]},
        },
        "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": LONG}},
    })
    schema = schemathesis.openapi.from_url(controller + "/openapi.json", config=config)
    schema.auth(refresh_interval=None)(AdminToken)
    return schema


@pytest.fixture(autouse=True)
def _node_id(request):
    """schemathesis's pytest plugin (4.32) reads ``node._nodeid``, which pytest 9 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_answer_is_documented(case, api_schema):
    case.call_and_validate(excluded_checks=checks_that_cannot_apply(case.operation, api_schema.raw_schema))


def checks_that_cannot_apply(operation, document: dict) -> list:
    """The checks an operation's own document rules out, with the reason in the document:

    - positive_data_acceptance, where valid input is more than JSON Schema can say: a body carrying
      content the API parses (``contentMediaType``: a certificate, a PKCS#12 file; a binary upload)
      or rules between fields (``x-checked-beyond-schema``: the enrollment object's);
    - unsupported_method, where a path is also a value of a templated sibling's (``/devices/import``
      and ``/devices/{device_id}``): the sibling's methods answer there, as they should.
    """
    excluded = []
    body = json.dumps(_resolved_body(operation.definition.raw, document))
    if any(marker in body for marker in ('"contentMediaType"', '"x-checked-beyond-schema"', '"format": "binary"')):
        excluded.append(positive_data_acceptance)
    if _shadowed(operation.path, document["paths"]):
        excluded.append(unsupported_method)
    return excluded


def _resolved_body(definition: dict, document: dict, depth: int = 0) -> Any:
    """The operation's request body with its $refs replaced by what they name (a few levels deep)."""
    def resolve(node: Any, level: int) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/") and level < 6:
                target: Any = document
                for part in ref[2:].split("/"):
                    target = target[part]
                return resolve(target, level + 1)
            return {key: resolve(value, level) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item, level) for item in node]
        return node

    return resolve(definition.get("requestBody", {}), depth)


def _shadowed(path: str, paths: dict) -> bool:
    """Whether another documented path template matches ``path`` taken literally."""
    for other in paths:
        if other != path and "{" in other:
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(other)) + "$"
            if re.match(pattern, path):
                return True
    return False
