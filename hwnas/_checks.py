"""Checks of config values driven by the fields' type hints (``hwnas.config`` uses them in ``__post_init__``).

A field's type says what it takes (``int``, ``float``, ``str``, ``bool``, ``X | None``, ``list[X]``,
``dict[str, X]``) and ``Annotated[X, Range(...)]`` adds the numbers it allows; ``check_fields`` checks a whole
dataclass, and ``FieldError`` names the key, the value and what is allowed (``from_dict`` adds where the value
came from).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import math
import numbers
import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError


class FieldError(ConfigError):
    """A config value that cannot work. ``key`` is the field; ``where`` (the YAML path or "flags") is filled
    in by ``from_dict``, which knows where the value came from.

    ``str(err)``: ``<problem> in <where>; <fix>``, e.g. ``epochs must be a whole number > 0, got 2.5 in x.yaml``.
    """

    def __init__(self, key: str, problem: str, fix: str = "", where: str = "") -> None:
        super().__init__(key, problem, fix, where)  # all in args: the error pickles (Ray) and unpickles whole
        self.key, self.problem, self.fix, self.where = key, problem, fix, where

    def __str__(self) -> str:
        return self.problem + (f" in {self.where}" if self.where else "") + (f"; {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class Range:
    """The values a numeric field allows: ``lo <(=) v <(=) hi`` (a missing bound is no bound)."""

    lo: float | None = None
    hi: float | None = None
    lo_closed: bool = True
    hi_closed: bool = True

    def __contains__(self, v: float) -> bool:
        return ((self.lo is None or v > self.lo or (self.lo_closed and v == self.lo))
                and (self.hi is None or v < self.hi or (self.hi_closed and v == self.hi)))

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>=' if self.lo_closed else '>'} {self.lo:g}"
        if self.lo is None:
            return f"{'<=' if self.hi_closed else '<'} {self.hi:g}"
        return f"in {'[' if self.lo_closed else '('}{self.lo:g}, {self.hi:g}{']' if self.hi_closed else ')'}"


# field types with their allowed range (the check reads them from the type hints)
PositiveInt = Annotated[int, Range(0, lo_closed=False)]
Count = Annotated[int, Range(0)]  # >= 0
Seed = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, lo_closed=False)]
NonNegative = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1, hi_closed=False)]  # [0, 1): momentum, Adam betas, margins
# a step size: above 1000 is no learning rate, and optimisers overflow float32 long before 1e38
LearningRate = Annotated[float, Range(0, 1e3, lo_closed=False)]


class _Mismatch(Exception):
    """``value`` (at ``path`` inside the field, e.g. ``[2]``) does not fit ``hint``."""

    def __init__(self, path: str, value: Any, hint: Any) -> None:
        super().__init__(path, value, hint)
        self.path, self.value, self.hint = path, value, hint


def _describe(hint: Any) -> str:
    """What ``hint`` allows, in words: ``a whole number > 0 or null``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return " ".join([_describe(args[0]), *(str(m) for m in args[1:] if isinstance(m, Range))])
    if origin in (Union, types.UnionType):
        return " or ".join([_describe(a) for a in args if a is not type(None)] + ["null"] * (type(None) in args))
    if origin in (list, collections.abc.Sequence):
        return "a list" if args[0] is Any else f"a list (each {_describe(args[0])})"
    if origin is dict:
        return "a mapping" + ("" if args[1] is Any else f" (each value {_describe(args[1])})")
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {', '.join(f.name for f in dataclasses.fields(hint))}"
    return {int: "a whole number", float: "a finite number", bool: "true or false", str: "a string",
            type(None): "null", Any: "anything"}.get(hint, str(hint))


def _conform(value: Any, hint: Any) -> Any:
    """``value`` checked against ``hint`` and normalised (int -> float for a float, tuple -> list).

    Raises:
        _Mismatch: naming the innermost part that does not fit.
    """
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        try:
            out = _conform(value, args[0])
        except _Mismatch as err:
            raise (err if err.path else _Mismatch("", value, hint)) from None  # say the range too
        if any(isinstance(m, Range) and out not in m for m in args[1:]):
            raise _Mismatch("", value, hint)
        return out
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for a in options:
            try:
                return _conform(value, a)
            except _Mismatch as err:
                if len(options) == 1 and err.path:  # the inner part that fails says more than the whole
                    raise
        raise _Mismatch("", value, hint)
    if origin in (list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch("", value, hint)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(_conform(v, args[0]))
            except _Mismatch as err:
                raise _Mismatch(f"[{i}]{err.path}", err.value, err.hint) from None
        return out
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _Mismatch("", value, hint)
        out = {}
        for k, v in value.items():
            try:
                out[k] = _conform(v, args[1])
            except _Mismatch as err:
                raise _Mismatch(f"[{k!r}]{err.path}", err.value, err.hint) from None
        return out
    if dataclasses.is_dataclass(hint):  # a nested block (``final:``): its mapping builds the dataclass
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict) or not set(value) <= {f.name for f in dataclasses.fields(hint)}:
            raise _Mismatch("", value, hint)
        return hint(**value)
    if hint is Any or (hint is type(None) and value is None):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if (hint is float and isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value)):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise _Mismatch("", value, hint)


def check_value(key: str, value: Any, hint: Any) -> Any:
    """``value`` of field ``key`` checked against the type hint ``hint`` (see ``check_fields``), normalised.

    Raises:
        FieldError: ``<key>[path] must be <what hint allows>, got <value>``.
    """
    try:
        return _conform(value, hint)
    except _Mismatch as err:
        quoted = " (a string: write numbers and true/false without quotes)" if (
            isinstance(err.value, str) and _describe(err.hint).startswith(("a whole", "a finite", "true"))) else ""
        raise FieldError(key, f"{key}{err.path} must be {_describe(err.hint)}, got {err.value!r}{quoted}") from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def check_fields(obj: Any) -> None:
    """Check every field of config dataclass ``obj`` against its type hint, normalising it in place.

    An ``int`` takes only whole numbers (not ``True``, ``2.5`` or ``"3"``); a ``float`` takes ints and floats
    (stored as float) and must be finite; ``X | None`` also takes None; ``list[X]``/``dict[str, X]`` check each
    element; ``Annotated[X, Range(...)]`` (``PositiveInt``, ``Fraction``, ...) also checks the range.

    Raises:
        FieldError: the first field that does not fit, naming the key, the value and what is allowed.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        setattr(obj, f.name, check_value(f.name, getattr(obj, f.name), hints[f.name]))


def check_space_args(space: str, args: dict[str, Any]) -> None:
    """``space_args`` must be arguments of the space's factory, of the types its hints name, and build it.

    Raises:
        FieldError: an unknown key (the accepted ones are listed), a bad value, or arguments the factory refuses.
    """
    from .space import SPACES

    factory = SPACES.get(space)
    params = inspect.signature(factory).parameters
    accepted = f"space {space!r} accepts: {', '.join(params)}" if params else f"space {space!r} takes no space_args"
    hints = get_type_hints(factory)
    for k, v in args.items():
        if k not in params:
            raise FieldError("space_args", f"space_args key {k!r} is not an argument of space {space!r}", accepted)
        try:
            check_value(f"space_args.{k}", v, hints.get(k, Any))
        except FieldError as err:
            raise FieldError("space_args", err.problem, accepted) from None
    try:
        factory(**args)
    except (TypeError, ValueError) as err:
        raise FieldError("space_args", f"space_args {args} do not build space {space!r} ({err})", accepted) from None
