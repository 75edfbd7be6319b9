"""The registry of search spaces: name -> factory returning a ``SearchSpace``."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .base import SearchSpace

SPACES: Registry[Callable[..., SearchSpace]] = Registry("search space")
