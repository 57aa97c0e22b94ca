"""Shapes shared by every resource: the input base class and the list page."""

from __future__ import annotations

import copy
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict

T = TypeVar("T")

#: Largest page a list endpoint serves.
MAX_PAGE = 1000
DEFAULT_PAGE = 100


def _json_number(value: Any) -> Any:
    """A number as JSON has it: pydantic would otherwise take "5" (and true) for a number, which the
    OpenAPI document says are not; 5.0 stays an integer, as JSON Schema counts it."""
    if isinstance(value, (str, bytes, bool)):
        raise ValueError("expected a JSON number")
    return value


def _strictness(annotation: Any) -> Any:
    """What keeps a field to the JSON type its schema states: booleans strict (no 0, "true" or
    "yes"), numbers refusing strings."""
    types = {annotation, *(getattr(annotation, "__args__", None) or ())}
    if bool in types:
        return Strict()
    if types & {int, float}:
        return BeforeValidator(_json_number)
    return None


class InputModel(BaseModel):
    """A request body: a misspelt or unknown field is an error, not silently ignored, and a value
    of another JSON type than the schema's too (``{"enabled": 1}`` is not a boolean)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for name, field in cls.__pydantic_fields__.items():
            strictness = _strictness(field.annotation)
            if strictness is not None and not any(type(m) is type(strictness) for m in field.metadata):
                strict = copy.copy(field)  # the parent's field (a table's, say) stays as it was
                strict.metadata = [*field.metadata, strictness]
                cls.__pydantic_fields__[name] = strict
                changed = True
        if changed:
            cls.model_rebuild(force=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int
