"""The trustpoint actions an operator may start, on one trustpoint or over a selection: which
job carries each out and the rules it follows. A new action is one more entry in
:data:`ACTIONS`. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.enums import JobKind
from shared.errors import ConflictError, ValidationError


@dataclass(frozen=True)
class TrustpointAction:
    #: As the API and a batch name it.
    name: str
    #: The job that carries it out.
    kind: JobKind
    #: Both statuses go to in_progress when the job is created (every status may: see
    #: shared.states.ALLOWED), so a list shows at once what is being worked on.
    restarts_statuses: bool
    #: Set: the operator must confirm the action over a selection; formatted with the
    #: trustpoint's ``name`` and the ``count`` of trustpoints selected.
    warning: str | None = None

    @property
    def confirmation_code(self) -> str:
        return f"{self.name}_confirmation_required"


ACTIONS: dict[str, TrustpointAction] = {action.name: action for action in (
    TrustpointAction("re_enroll", JobKind.RE_ENROLL, restarts_statuses=True),
    TrustpointAction("refresh", JobKind.REFRESH, restarts_statuses=True),
    TrustpointAction(
        "delete", JobKind.DELETE, restarts_statuses=False,
        warning="deleting removes trustpoint {name} and its certificates from {count} devices, on the devices "
                "and in certfleet; to go ahead, send the same request with \"confirm\": true",
    ),
)}

_BY_KIND = {action.kind: action for action in ACTIONS.values()}


class ConfirmationRequired(ConflictError):
    """The action needs the operator's confirmation (409); ``selected`` says how many it would touch."""

    def __init__(self, action: TrustpointAction, *, name: str, count: int) -> None:
        super().__init__(action.warning.format(name=name, count=count), code=action.confirmation_code)
        #: Extra problem members: a client can ask its user without parsing the message.
        self.extensions = {"selected": count}


def action_named(name: str) -> TrustpointAction:
    """The action called ``name``; 422 ``unknown_action`` naming the known ones otherwise."""
    action = ACTIONS.get(name)
    if action is None:
        raise ValidationError(f"unknown action {name!r}; choose one of {', '.join(ACTIONS)}",
                              code="unknown_action")
    return action


def action_of(kind: JobKind | str) -> TrustpointAction:
    return _BY_KIND[JobKind(kind)]


def check_confirmed(action: TrustpointAction, *, confirm: bool, name: str, count: int) -> None:
    if action.warning is not None and not confirm:
        raise ConfirmationRequired(action, name=name, count=count)
