"""The one set of type rules for values read from YAML.

YAML gives ``1`` (int), ``1.0`` (float), ``true`` (bool) and ``"x"`` (str). A recipe value
fits a type hint when it could only mean that: ``true`` is not an int, ``3`` is a fine
float. The recipe's own fields (:mod:`gptf.recipe.structure`) and every component's
parameters (:mod:`gptf.build.registry`) are checked by these same rules.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from gptf.errors import shown


def fits(value: Any, annotation: Any) -> bool:
    """True when ``value`` (from YAML) is acceptable for the type hint ``annotation``."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(annotation)
        return not args or all(fits(v, args[0]) for v in value)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    return True


def type_name(annotation: Any) -> str:
    """``int``, ``float | None``, ``Literal['fp32', 'bf16']``: for messages."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def type_problem(value: Any, annotation: Any) -> str | None:
    """A short message if ``value`` does not fit ``annotation``, else None."""
    if fits(value, annotation):
        return None
    return f"expected {type_name(annotation)}, got {type(value).__name__} {shown(value)}"
