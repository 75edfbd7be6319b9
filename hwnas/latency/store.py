"""Where tables live: device names, default paths, and finding a shipped table for this machine.

Tables are looked up, in order, under ``$HWNAS_LATENCY_TABLES`` (``os.pathsep``-separated folders),
``./latency_tables`` and the ``latency_tables/`` folder next to the hwnas package (the shipped ones).
Lookups read local files only; they never touch the network.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from .protocol import cpu_model, isa_flags
from .table import TableError, read_table

TABLES_DIR = "latency_tables"


def device_slug(threads: int = 1, model: str | None = None) -> str:
    """Device name for this machine: slug of the CPU model plus the thread count, e.g. ``amd-epyc-1t``."""
    slug = re.sub(r"[^a-z0-9]+", "-", (model or cpu_model()).lower())
    slug = re.sub(r"-(r|tm|cpu|processor|with-radeon-graphics)(?=-|$)", "", slug).strip("-")
    return f"{slug or 'cpu'}-{threads}t"


def default_table_path(space_name: str, device: str | None = None, root: str | Path = TABLES_DIR) -> Path:
    """``<root>/<device>/<space>.json``; ``device`` defaults to ``device_slug()`` of this machine."""
    return Path(root) / (device or device_slug()) / f"{space_name}.json"


def table_roots() -> list[Path]:
    """Folders searched by ``find_table``, in order (duplicates removed)."""
    roots = [Path(p) for p in os.environ.get("HWNAS_LATENCY_TABLES", "").split(os.pathsep) if p]
    roots += [Path.cwd() / TABLES_DIR, Path(__file__).resolve().parents[2] / TABLES_DIR]
    seen, out = set(), []
    for r in roots:
        key = r.resolve() if r.exists() else r
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def find_table(space_name: str, threads: int = 1, roots: list[Path] | None = None) -> Path | None:
    """A table for ``space_name`` measured on this kind of machine, or None.

    A table matches when its CPU model, ISA flags and thread count equal this machine's (and ``threads``).
    The device folder named ``device_slug(threads)`` is tried first, then every other device folder.

    Args:
        space_name: registered space name.
        threads: thread count the predictions will be used with.
        roots: folders to search (default ``table_roots()``).

    Returns:
        Path of the first matching table, or None when there is none.
    """
    model, isa, preferred = cpu_model(), isa_flags(), device_slug(threads)
    for root in roots if roots is not None else table_roots():
        if not root.is_dir():
            continue
        devices = sorted(root.iterdir(), key=lambda d: (d.name != preferred, d.name))
        for dev in devices:
            path = dev / f"{space_name}.json"
            if not path.is_file():
                continue
            try:
                table = read_table(path)
            except TableError as err:
                warnings.warn(f"skipping unreadable latency table: {err}", stacklevel=2)
                continue
            if (table.space == space_name and table.device.get("cpu_model") == model
                    and sorted(table.device.get("isa", [])) == isa and table.protocol.get("threads") == threads):
                return path
    return None
