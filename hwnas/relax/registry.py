"""Registry of relaxations: name -> ``Relaxation`` subclass."""

from __future__ import annotations

from ..registry import Registry

RELAXATIONS: Registry[type] = Registry("relaxation")
