"""Whether a value fits a config field's type hint: for a config built in Python (a script's
``TrainerConfig(batch_size=2.5)``) and for one read back from a run's ``config.json``.

Annotations alone check nothing at run time, and a float where an int belongs fails much
later (``rng.choice(size=2.5)`` in the first training round), far from the setting at fault.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import types
import typing
from typing import Any


def fits(value: Any, hint: Any, from_json: bool = False) -> bool:
    """Whether ``value`` can stand for a field typed ``hint``.

    Known hints: ``int`` (an integral number, not a bool), ``float`` (any real number, not a
    bool), ``bool``, ``str``, ``Path`` (a path), a ``Literal``'s choices, a tuple or list of
    them, a dataclass (an instance), unions and ``None``. Any other hint accepts every
    value. ``from_json``: the value was read from JSON, where a path is a string and a
    dataclass a dict of its fields.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg, from_json) for arg in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (tuple, list):
        items = [a for a in args if a is not Ellipsis]
        if not isinstance(value, list | tuple):
            return False
        if len(items) > 1:  # tuple[int, str]: one item per position
            return len(value) == len(items) and all(
                fits(v, item, from_json) for v, item in zip(value, items, strict=True)
            )
        return all(not items or fits(v, items[0], from_json) for v in value)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict) if from_json else isinstance(value, hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return isinstance(value, str) if from_json else isinstance(value, os.PathLike)
    return True


def describe(hint: Any) -> str:
    """A field's type for an error message: ``int``, ``int | None``, ``one of 'a', 'b'``, ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "")


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """``cls``'s resolved field annotations (``typing.get_type_hints``), once per class."""
    return typing.get_type_hints(cls)
