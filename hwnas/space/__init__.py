"""Search spaces, declared once as data. ``get_space("seed-cnn")`` returns a ``SearchSpace``."""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

from . import mbconv, proxyless, seed_cnn  # noqa: F401  (registration)
from .base import Arch, ArchError, Choice, Continuous, SearchSpace, Unit
from .named import NAMED_ARCHS, is_named, named_arch
from .registry import SPACES


def get_space(name: str, **kwargs: Any) -> SearchSpace:
    """Build the registered space ``name`` (kwargs go to its factory, e.g. mbconv widths).

    The returned space records the kwargs that differ from the factory's defaults as ``space.args`` (part of
    every arch id and of arch.json's ``space_args``).
    """
    factory = SPACES.get(name)
    space = factory(**kwargs)
    defaults = {k: p.default for k, p in inspect.signature(factory).parameters.items()}
    args = {k: v for k, v in kwargs.items() if k not in defaults or _jsonable(v) != _jsonable(defaults[k])}
    return dataclasses.replace(space, args=_jsonable(args)) if args else space


def _jsonable(value: Any) -> Any:
    """Tuples as lists (how YAML and JSON give them back), so ``(16, 24)`` and ``[16, 24]`` compare equal."""
    return json.loads(json.dumps(value))


__all__ = ["NAMED_ARCHS", "SPACES", "Arch", "ArchError", "Choice", "Continuous", "SearchSpace", "Unit", "get_space", "is_named", "named_arch"]
