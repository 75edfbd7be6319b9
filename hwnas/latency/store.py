"""Where tables live: device names, default paths, and finding a shipped table for this machine.

Tables are looked up, in order, under ``$HWNAS_LATENCY_TABLES`` (``os.pathsep``-separated folders),
``./latency_tables``, this user's table folder (``hwnas.shipped.user_tables_dir``) and the tables shipped with
hwnas (the checkout's ``latency_tables/``, or the installed package's copy). New tables go to
``hwnas.shipped.tables_home()`` unless a path is given.
Lookups read local files only; they never touch the network. A table is used for this machine only when
it is complete, its host fingerprint matches and a quick probe (``fingerprint.probe``) agrees with it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import HwnasError
from ..shipped import TABLES, env_table_dirs, shipped_dir, tables_home, user_tables_dir
from ..space import SearchSpace, get_space
from .fingerprint import TOLERANCE, ProbeResult, mismatches, probe
from .protocol import Protocol, cpu_model
from .table import (
    LatencyTable,
    TableError,
    TableWarning,
    check_complete,
    profile_command,
    read_table,
    space_hash,
    unit_keys,
)

TABLES_DIR = TABLES


def device_slug(threads: int = 1, model: str | None = None) -> str:
    """Device name for this machine: slug of the CPU model plus the thread count, e.g. ``amd-epyc-1t``."""
    slug = re.sub(r"[^a-z0-9]+", "-", (model or cpu_model()).lower())
    slug = re.sub(r"-(r|tm|cpu|processor|with-radeon-graphics)(?=-|$)", "", slug).strip("-")
    return f"{slug or 'cpu'}-{threads}t"


def table_file(space_name: str, precision: str = "fp32") -> str:
    """A table's file name: ``<space>.json`` (fp32), ``<space>.int8.json`` (int8), so both live side by side."""
    return f"{space_name}.json" if precision == "fp32" else f"{space_name}.{precision}.json"


def default_table_path(space_name: str, device: str | None = None, root: str | Path | None = None,
                       precision: str = "fp32") -> Path:
    """``<root>/<device>/<space>.json`` (``<space>.int8.json`` for int8); ``device`` defaults to ``device_slug()``
    of this machine, ``root`` to ``tables_home()`` (``$HWNAS_LATENCY_TABLES``, else ``./latency_tables`` if
    present, else the user folder)."""
    root = Path(root if root is not None else tables_home())
    return root / (device or device_slug()) / table_file(space_name, precision)


def table_roots() -> list[Path]:
    """Folders searched by ``find_table``, in order (duplicates removed)."""
    roots = [*env_table_dirs(), Path.cwd() / TABLES_DIR, user_tables_dir()]
    roots += [p for p in [shipped_dir(TABLES)] if p is not None]
    seen, out = set(), []
    for r in roots:
        key = r.resolve() if r.exists() else r
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


@dataclass(frozen=True)
class Assessment:
    """Whether the table at ``path`` is this machine's, complete and probe-tested for a space.

    ``status``: ``ok``; ``unreadable``; ``other-space`` (another space, not a problem); ``space-version``
    (measured for another version of the space); ``foreign`` (``fingerprint.mismatches`` not empty);
    ``incomplete`` (this host's, missing units: ``hwnas profile`` resumes it); ``probe-failed``.
    ``reason``: one line saying why (empty when ok); ``probe``: the ``ProbeResult`` when one ran.
    """

    path: Path
    status: str
    reason: str = ""
    table: LatencyTable | None = None
    probe: ProbeResult | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def assess_table(path: str | Path, space: SearchSpace, threads: int = 1, *, tolerance: float = TOLERANCE,
                 probe_protocol: Protocol | None = None, precision: str = "fp32") -> Assessment:
    """Check the table at ``path`` for ``space`` on this host: readable, same space version, of ``precision``
    (else ``other-precision``, never used), fingerprint (``mismatches``), complete (``check_complete``), then
    ``probe`` (only when everything else holds)."""
    path = Path(path)
    try:
        table = read_table(path)
    except TableError as err:
        return Assessment(path, "unreadable", str(err))
    if table.space != space.name:
        return Assessment(path, "other-space", f"it is a table of space {table.space!r}", table)
    if table.precision != precision:
        return Assessment(path, "other-precision", f"it times {table.precision} models, not {precision}", table)
    if table.space_hash != space_hash(space):
        return Assessment(path, "space-version", f"it was measured for another version of space {space.name!r} "
                          f"(hash {table.space_hash} != {space_hash(space)})", table)
    why = mismatches(table, threads)
    if why:
        return Assessment(path, "foreign", f"not this machine's: {'; '.join(why)}", table)
    try:
        check_complete(table, space, path)
    except TableError:
        left = len(table.missing(space)) if table.overhead_ms is not None else None
        what = "no Identity overhead yet" if left is None else f"{left} of {len(unit_keys(space))} units missing"
        return Assessment(path, "incomplete", f"incomplete ({what})", table)
    result = probe(table, space, probe_protocol, tolerance=tolerance, path=path)
    if not result.passed:
        return Assessment(path, "probe-failed", f"its predictions are off on this machine: {result.summary()}",
                          table, result)
    return Assessment(path, "ok", "", table, result)


def fix_command(found: Assessment, space_name: str, threads: int = 1, precision: str = "fp32") -> str:
    """The command that gives this machine a good ``precision`` table instead of ``found``: resume an
    incomplete table of this host, else profile into a new device folder (never over another device's table)."""
    if found.status == "incomplete" and found.table is not None:
        return profile_command(space_name, found.table.device["name"], found.path, precision)
    device = free_device(space_name, device_slug(threads), taken=[found.path], precision=precision)
    return profile_command(space_name, device, default_table_path(space_name, device, precision=precision), precision)


def free_device(space_name: str, base: str, root: str | Path | None = None, taken: list[Path] = (),
                precision: str = "fp32") -> str:
    """``base``, or ``base-2``, ``base-3``, ... : the first device name whose table path under ``root`` holds
    no file (and is none of ``taken``), so a new profile never overwrites another table."""
    taken_set = {Path(t).resolve() for t in taken}
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        path = default_table_path(space_name, name, root, precision)
        if not path.exists() and path.resolve() not in taken_set:
            return name
    raise HwnasError(f"no free device name {base}-N under {root or tables_home()}; pass --device and --out")


def table_paths(space_name: str, threads: int = 1, roots: list[Path] | None = None, precision: str = "fp32"
                ) -> list[Path]:
    """Every ``<root>/<device>/<space>.json`` (``<space>.int8.json`` for int8) in the order ``find_table`` tries
    them: per root, the device folder ``device_slug(threads)`` first, then the others by name."""
    preferred, out, name = device_slug(threads), [], table_file(space_name, precision)
    for root in roots if roots is not None else table_roots():
        if not root.is_dir():
            continue
        for dev in sorted(root.iterdir(), key=lambda d: (d.name != preferred, d.name)):
            if (dev / name).is_file():
                out.append(dev / name)
    return out


def assess_tables(space_name: str, threads: int = 1, roots: list[Path] | None = None, *, first: bool = False,
                  tolerance: float = TOLERANCE, probe_protocol: Protocol | None = None,
                  precision: str = "fp32") -> list[Assessment]:
    """``assess_table`` of every ``table_paths`` entry of ``precision`` (tables of other spaces or precisions
    left out), in order; with ``first`` stop after the first good one."""
    space = get_space(space_name)
    out = []
    for path in table_paths(space_name, threads, roots, precision):
        found = assess_table(path, space, threads, tolerance=tolerance, probe_protocol=probe_protocol,
                             precision=precision)
        if found.status not in ("other-space", "other-precision"):
            out.append(found)
        if first and found.ok:
            break
    return out


def find_table(space_name: str, threads: int = 1, roots: list[Path] | None = None, *,
               tolerance: float = TOLERANCE, probe_protocol: Protocol | None = None,
               precision: str = "fp32") -> Path | None:
    """A table for ``space_name`` measured on this machine, complete and passing the probe; or None.

    Tried in ``table_paths`` order. A table is chosen only when its fingerprint matches this host with
    ``threads`` (``fingerprint.mismatches`` empty), it is complete for the space and its ``probe`` passes
    (three reference networks measured end to end within ``tolerance`` of its prediction, a few seconds,
    done once per process and table file). Every table skipped on the way gets a ``TableWarning`` naming
    the reason and the ``hwnas profile`` command that fixes it.

    Args:
        space_name: registered space name.
        threads: thread count the predictions will be used with.
        roots: folders to search (default ``table_roots()``).
        tolerance: the probe's tolerance (share of the prediction).
        probe_protocol: the probe's timing knobs (default: the table's protocol with few runs).
        precision: ``fp32`` or ``int8``: only tables of that precision are considered (``<space>.int8.json``).

    Returns:
        Path of the first good table, or None when there is none.
    """
    for found in assess_tables(space_name, threads, roots, first=True, tolerance=tolerance,
                               probe_protocol=probe_protocol, precision=precision):
        if found.ok:
            return found.path
        warnings.warn(f"skipping latency table {found.path}: {found.reason}; give this machine its own table "
                      f"with `{fix_command(found, space_name, threads, precision)}`", TableWarning, stacklevel=2)
    return None


def resolve_table(spec: str | Path, space_name: str, roots: list[Path] | None = None,
                  precision: str = "fp32") -> Path:
    """The table a user named: a path (a file, or anything ending in ``.json``), else a device name looked up
    as ``<root>/<device>/<table_file>`` (``<space>.json``, ``<space>.int8.json`` for int8) in ``table_roots()``
    order; no fingerprint check or probe: naming a device says its table is wanted, e.g. a phone's.

    Raises:
        HwnasError: a device name with no table of the space under any root.
    """
    path = Path(spec)
    if path.is_file() or str(spec).endswith(".json") or len(path.parts) > 1:
        return path  # a path: loading it says what is wrong with it
    for root in roots if roots is not None else table_roots():
        if (root / str(spec) / table_file(space_name, precision)).is_file():
            return root / str(spec) / table_file(space_name, precision)
    searched = ", ".join(str(r) for r in (roots if roots is not None else table_roots()))
    out = default_table_path(space_name, str(spec), precision=precision)
    raise HwnasError(f"no {precision} latency table of space {space_name} for device {spec!r} (searched {searched}); "
                     f"measure one with `{profile_command(space_name, str(spec), out, precision)}` or pass the "
                     "table's path")
