"""Which problems a route can answer, read from the code rather than listed by hand.

A route's endpoint and its dependencies are read (their source, with :mod:`ast`), and every
:class:`shared.errors.CertfleetError` they construct gives a (status, code) pair: the class's
``status``, and the ``code=`` it is given (a literal), or the class's own ``code``. The project's
functions they call are read the same way, transitively: module functions and classes of
:data:`PACKAGES` named through a module or the function's globals, methods called on
``self``/``cls``, and the validators of the pydantic models a route reads.

It over-approximates: an error constructed and caught on the way still counts (harmless in a
document that lists what a route *can* answer). A code computed at run time (``code=exc.code``)
is recorded as ``None``: the status is known, the codes are not all. What it cannot see (a method
of an object passed in) it misses; :mod:`.openapi_docs` adds the framework's own answers (401,
404 on an unmatched path, 422 for invalid input, 503) whatever this finds.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

from shared.errors import CertfleetError

#: The packages whose code is followed; anything else (the standard library, SQLAlchemy, FastAPI) is not.
PACKAGES = ("services.", "shared.")
_MISSING = object()


@dataclass(frozen=True, order=True)
class Raised:
    """A problem a route can answer: its HTTP status and stable code (None: chosen at run time)."""

    status: int
    code: str | None


def raised_by(callables: Iterable[Callable[..., Any]]) -> frozenset[Raised]:
    """The problems the callables can raise, following the project's calls."""
    found: set[Raised] = set()
    for func in callables:
        found |= _raised(func)
    return frozenset(found)


def models_raise(models: Iterable[type]) -> frozenset[Raised]:
    """The problems the validators of pydantic ``models`` (and the models they nest) can raise."""
    found: set[Raised] = set()
    for model in models:
        found |= _model_raises(model)
    return frozenset(found)


def _in_project(obj: Any) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith(PACKAGES)


@cache
def _raised(func: Callable[..., Any]) -> frozenset[Raised]:
    # Recursion guard: a function being read counts as raising nothing until it is done; a cycle
    # (a function calling itself, directly or not) then still finds everything on its way.
    _raised_in_progress.add(func)
    try:
        return frozenset(_read(func))
    finally:
        _raised_in_progress.discard(func)


_raised_in_progress: set[Callable[..., Any]] = set()


def _follow(func: Callable[..., Any]) -> frozenset[Raised]:
    if func in _raised_in_progress:
        return frozenset()
    return _raised(func)


def _tree(func: Callable[..., Any]) -> ast.AST | None:
    try:
        source = textwrap.dedent(inspect.getsource(func))
        return ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None  # generated code (a dataclass __init__), a lambda inside an expression, C code


def _namespace(func: Callable[..., Any]) -> dict[str, Any]:
    names = dict(vars(builtins))
    names.update(getattr(func, "__globals__", {}))
    code, closure = getattr(func, "__code__", None), getattr(func, "__closure__", None)
    for name, cell in zip(code.co_freevars if code else (), closure or (), strict=False):
        try:
            names[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    return names


def _owner(func: Callable[..., Any]) -> type | None:
    """The class a method is defined in, found through its qualified name."""
    parts = getattr(func, "__qualname__", "").split(".")[:-1]
    if not parts or "<locals>" in parts:
        return None
    obj: Any = getattr(func, "__globals__", {}).get(parts[0], _MISSING)
    for part in parts[1:]:
        obj = getattr(obj, part, _MISSING)
    return obj if inspect.isclass(obj) else None


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, (staticmethod, classmethod)):
        return obj.__func__
    return obj


def _resolve(node: ast.AST, names: dict[str, Any], owner: type | None) -> Any:
    """What a name or dotted attribute refers to, where that can be known without running anything:
    names, attributes of modules and classes (read statically, so no property runs)."""
    if isinstance(node, ast.Name):
        if node.id in ("self", "cls") and owner is not None:
            return owner
        return names.get(node.id, _MISSING)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, names, owner)
        if isinstance(base, types.ModuleType):
            return getattr(base, node.attr, _MISSING)
        if inspect.isclass(base):
            try:
                return _unwrap(inspect.getattr_static(base, node.attr))
            except AttributeError:
                return _MISSING
    return _MISSING


def _literal_code(call: ast.Call) -> tuple[bool, str | None]:
    """(whether the call passes ``code=``, its value when it is a string literal)."""
    for keyword in call.keywords:
        if keyword.arg == "code":
            value = keyword.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return True, value.value
            return True, None
    return False, None


@cache
def _error_codes(cls: type[CertfleetError]) -> frozenset[str | None]:
    """The codes an error class gets when constructed without ``code=``: its own, or those its
    ``__init__`` passes on (a literal; None when computed)."""
    init = cls.__dict__.get("__init__")
    tree = _tree(init) if init is not None else None
    if tree is not None:
        passed = [_literal_code(node) for node in ast.walk(tree) if isinstance(node, ast.Call)]
        codes = {code for given, code in passed if given}
        if codes:
            return frozenset(codes)
    return frozenset({cls.code})


def _constructed(cls: type[CertfleetError], call: ast.Call) -> set[Raised]:
    given, code = _literal_code(call)
    if given:
        return {Raised(cls.status, code)}
    return {Raised(cls.status, c) for c in _error_codes(cls)}


def _read(func: Callable[..., Any]) -> set[Raised]:
    tree = _tree(func)
    if tree is None:
        return set()
    names, owner = _namespace(func), _owner(func)
    found: set[Raised] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None and not isinstance(node.exc, ast.Call):
            target = _resolve(node.exc, names, owner)
            if inspect.isclass(target) and issubclass(target, CertfleetError):
                found |= {Raised(target.status, c) for c in _error_codes(target)}
            continue
        if not isinstance(node, ast.Call):
            continue
        target = _resolve(node.func, names, owner)
        if target is _MISSING:
            continue
        if inspect.isclass(target):
            if issubclass(target, CertfleetError):
                found |= _constructed(target, node)
            elif issubclass(target, BaseModel):
                found |= _model_raises(target)
            elif _in_project(target):
                for hook in ("__init__", "__post_init__"):
                    method = target.__dict__.get(hook)
                    if method is not None:
                        found |= _follow(method)
        elif inspect.isfunction(target) and _in_project(target):
            found |= _follow(target)
    return found


@cache
def _model_raises(model: type) -> frozenset[Raised]:
    if not (inspect.isclass(model) and issubclass(model, BaseModel)) or not _in_project(model):
        return frozenset()
    found: set[Raised] = set()
    decorators = model.__pydantic_decorators__
    for group in (decorators.field_validators, decorators.model_validators):
        for decorator in group.values():
            found |= _follow(_unwrap(decorator.func))
    for field in model.model_fields.values():
        for nested in _model_classes(field.annotation):
            if nested is not model:
                found |= _model_raises(nested)
    return frozenset(found)


def _model_classes(annotation: Any) -> set[type]:
    """The pydantic model classes an annotation names, inside lists, unions and the like."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return {annotation}
    found: set[type] = set()
    for arg in getattr(annotation, "__args__", ()) or ():
        found |= _model_classes(arg)
    return found
