"""Search spaces, declared once as data. ``get_space("seed-cnn")`` returns a ``SearchSpace``."""

from __future__ import annotations

from typing import Any

from . import mbconv, seed_cnn  # noqa: F401  (registration)
from .base import Arch, ArchError, Choice, Continuous, SearchSpace, Unit
from .registry import SPACES


def get_space(name: str, **kwargs: Any) -> SearchSpace:
    """Build the registered space ``name`` (kwargs go to its factory, e.g. mbconv widths)."""
    return SPACES.get(name)(**kwargs)


__all__ = ["SPACES", "Arch", "ArchError", "Choice", "Continuous", "SearchSpace", "Unit", "get_space"]
