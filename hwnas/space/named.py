"""Named archs per space, like a model registry: ``SPACE:NAME`` (``proxyless:proxylessnas-mobile``) names a
published arch wherever an arch file is accepted (``hwnas latency predict``, ``hwnas train``).

A space module registers its archs as data: ``@NAMED_ARCHS.register("space:name")`` on a function that
returns the arch (``label -> value``), checked against the space (at its default arguments) when read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..registry import Registry
from .base import Arch

NAMED_ARCHS: Registry[Callable[[], Arch]] = Registry("named arch")


def is_named(ref: str | Path) -> bool:
    """``ref`` is ``SPACE:NAME`` of a registered space and no file of that name exists."""
    from .registry import SPACES

    text = str(ref)
    space, sep, name = text.partition(":")
    return bool(sep and name) and space in SPACES.names() and not Path(text).exists()


def named_arch(ref: str) -> dict[str, Any]:
    """The arch file object (``space.to_json``) of the named arch ``ref``, with ``"named": ref``.

    Raises:
        UnknownNameError: no arch of that name (the message lists the known ``SPACE:NAME``).
        ArchError: the registered arch is not in its space (a registry bug).
    """
    from . import get_space

    arch = NAMED_ARCHS.get(ref)()
    return get_space(ref.partition(":")[0]).to_json(arch, named=ref)
