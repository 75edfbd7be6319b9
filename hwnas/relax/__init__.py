"""Relaxations of the discrete choices: ``softmax`` (DARTS), ``gumbel`` (FBNet), ``single-path`` (GDAS/ProxylessNAS)."""

from __future__ import annotations

from typing import Any

from . import gumbel, single_path, softmax  # noqa: F401  (registration)
from .base import Hard, Relaxation, Sample, Soft
from .registry import RELAXATIONS


def make_relaxation(name: str, space, **kwargs: Any) -> Relaxation:
    """Instantiate the registered relaxation ``name`` for ``space``."""
    return RELAXATIONS.get(name)(space, **kwargs)


__all__ = ["RELAXATIONS", "Hard", "Relaxation", "Sample", "Soft", "make_relaxation"]
