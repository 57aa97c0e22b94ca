"""Reading alerts for the API and the CLI: a domain's list (its subtree only, newest last_seen
first) and the counts of its open alerts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import Session, select

from services.controller.rules.scope import DomainScope
from shared.alerts import open_states
from shared.enums import AlertCode, AlertState, Severity
from shared.models import Alert

#: What ``state=open`` means: the condition still holds (active or acknowledged).
OPEN = "open"


def _in_scope(scope: DomainScope) -> list:
    return [] if scope.is_root else [Alert.domain_id.in_(scope.subtree)]


def list_alerts(
    session: Session, *, scope: DomainScope, offset: int, limit: int, state: str | None = None,
    code: AlertCode | None = None, severity: Severity | None = None, device_id: uuid.UUID | None = None,
) -> tuple[list[Alert], int]:
    """A page of the domain's alerts, newest ``last_seen`` first, and how many match in all.
    ``state``: an AlertState value, or ``open`` for active and acknowledged ones."""
    conditions = _in_scope(scope)
    if state == OPEN:
        conditions.append(Alert.state.in_(open_states()))
    elif state is not None:
        conditions.append(Alert.state == AlertState(state).value)
    if code is not None:
        conditions.append(Alert.code == AlertCode(code).value)
    if severity is not None:
        conditions.append(Alert.severity == Severity(severity).value)
    if device_id is not None:
        conditions.append(Alert.device_id == device_id)
    total = session.exec(select(func.count()).select_from(Alert).where(*conditions)).one()
    rows = session.exec(
        select(Alert).where(*conditions).order_by(Alert.last_seen.desc(), Alert.id).offset(offset).limit(limit)
    ).all()
    return list(rows), total


@dataclass
class Summary:
    """Open alerts counted every way the CLI and dashboards show them; every code and severity
    is present, zeros included."""

    total: int = 0
    by_state: dict[str, int] = field(default_factory=lambda: dict.fromkeys(open_states(), 0))
    by_code: dict[str, int] = field(default_factory=lambda: dict.fromkeys((c.value for c in AlertCode), 0))
    by_severity: dict[str, int] = field(default_factory=lambda: dict.fromkeys((s.value for s in Severity), 0))
    #: [{"code", "severity", "count"}] for the pairs that have open alerts, most first.
    by_code_and_severity: list[dict] = field(default_factory=list)


def summarize(session: Session, *, scope: DomainScope) -> Summary:
    rows = session.exec(
        select(Alert.code, Alert.severity, Alert.state, func.count())
        .where(Alert.state.in_(open_states()), *_in_scope(scope))
        .group_by(Alert.code, Alert.severity, Alert.state)
    ).all()
    summary = Summary()
    pairs: dict[tuple[str, str], int] = {}
    for code, severity, state, count in rows:
        summary.total += count
        summary.by_state[state] = summary.by_state.get(state, 0) + count
        summary.by_code[code] = summary.by_code.get(code, 0) + count
        summary.by_severity[severity] = summary.by_severity.get(severity, 0) + count
        pairs[(code, severity)] = pairs.get((code, severity), 0) + count
    summary.by_code_and_severity = [{"code": code, "severity": severity, "count": count}
                                    for (code, severity), count in sorted(pairs.items(), key=lambda p: (-p[1], p[0]))]
    return summary


def count_open(session: Session) -> dict[tuple[str, str], int]:
    """Open alerts of the whole installation by (code, severity): the metric's one query."""
    return {(code, severity): count for code, severity, count in session.exec(
        select(Alert.code, Alert.severity, func.count()).where(Alert.state.in_(open_states()))
        .group_by(Alert.code, Alert.severity)).all()}
