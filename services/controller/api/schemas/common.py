"""Shapes shared by every resource: the input base class and the list page."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")

#: Largest page a list endpoint serves.
MAX_PAGE = 1000
DEFAULT_PAGE = 100


class InputModel(BaseModel):
    """A request body: a misspelt or unknown field is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int
