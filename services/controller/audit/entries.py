"""What an audit entry says, built from what is known when the answer's status is: pure.

Who: the API token the request carried (id, name, role, home domain) once it was accepted, or
nobody (a request refused with 401); for a command run on the database directly, the operator's
operating-system user on its host. Where: the domain the request was addressed to (its path's),
or the caller's home domain when the path names none, or one the caller does not reach (so a
probe of a sibling domain is filed with the prober, not shown to the sibling). What: the route's
name, method, path template and path parameters, and what the route noted; never a body or a
query string. How it ended: the status, "ok" or "failed", and the problem's code.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.controller.audit.routes import RouteMatch
from shared.domains import GLOBAL_DOMAIN_ID
from shared.models import AuditEntry

OK, FAILED = "ok", "failed"
OUTCOMES = (OK, FAILED)
API, CLI = "api", "cli"
#: Longest answer read for its problem code or the id of what it created.
MAX_READ_ANSWER = 64 * 1024


@dataclass(frozen=True)
class Caller:
    """An accepted API token, as the audit log names it (never the token itself)."""

    token_id: uuid.UUID | None
    name: str
    role: str
    home_domain_id: uuid.UUID


def outcome_of(status: int) -> str:
    return OK if status < 400 else FAILED


def filed_under(addressed: uuid.UUID | None, caller: Caller | None,
                parents: Callable[[], Mapping[uuid.UUID, uuid.UUID | None]]) -> uuid.UUID:
    """The domain an API entry is filed under. ``parents()`` (each domain's parent) is asked only
    when the answer depends on the tree."""
    if caller is None:  # nobody to attribute it to: where it was aimed
        return addressed or GLOBAL_DOMAIN_ID
    home = caller.home_domain_id
    if addressed is None or addressed == home:
        return home
    if home == GLOBAL_DOMAIN_ID:
        return addressed
    parent_of, current, seen = parents(), addressed, set()
    while current is not None and current not in seen:  # up from the addressed domain
        if current == home:
            return addressed
        seen.add(current)
        current = parent_of.get(current)
    return home  # outside the caller's reach, or no domain at all


def answer_facts(body: bytes) -> tuple[str | None, uuid.UUID | None]:
    """(problem code, id of what was created) read from a JSON answer; nothing else of it is kept."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(answer, dict):
        return None, None
    code = answer.get("code") if isinstance(answer.get("code"), str) else None
    job = answer.get("job") if isinstance(answer.get("job"), dict) else {}
    return (code[:64] if code else None), (_uuid(answer.get("id")) or _uuid(job.get("id")))


def api_entry(*, at: datetime, method: str, route: RouteMatch, caller: Caller | None, domain_id: uuid.UUID,
              status: int, error_code: str | None, created_id: uuid.UUID | None,
              details: Mapping[str, Any]) -> AuditEntry:
    failed = outcome_of(status) == FAILED
    return AuditEntry(
        at=at, domain_id=domain_id, channel=API,
        token_id=caller.token_id if caller else None, token_name=caller.name[:128] if caller else "",
        role=caller.role if caller else "", home_domain_id=caller.home_domain_id if caller else None,
        action=route.action[:64], method=method[:8], path=route.path, targets=dict(route.params),
        device_id=route.device_id, target_id=(created_id if not failed else None) or route.target_id,
        details=dict(details), status=status, outcome=outcome_of(status),
        error_code=(error_code or f"http_{status}") if failed else None,
    )


def command_entry(*, at: datetime, action: str, domain_id: uuid.UUID, operator: str, ok: bool,
                  error_code: str | None = None, target_id: uuid.UUID | None = None,
                  details: Mapping[str, Any] | None = None) -> AuditEntry:
    """A command that changed the database directly, run by ``operator`` on the controller's host."""
    return AuditEntry(at=at, domain_id=domain_id, channel=CLI, operator=operator[:255], action=action[:64],
                      target_id=target_id, targets={"id": str(target_id)} if target_id else {},
                      details=dict(details or {}), outcome=OK if ok else FAILED,
                      error_code=None if ok else (error_code or "failed")[:64])


def local_operator() -> str:
    """Who runs this process: the operating-system user at the host (the uid where the user has
    no name)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
