"""Published latency tables turned into hwnas tables: ``hwnas latency import --format FORMAT FILE``.

An imported table is *predicted only*: its numbers were measured by someone else on their device
(``source: "imported"``; the device block names the file, its sha256 and the note "predicted only, never
measured by hwnas"). Its fingerprint is no host's, so ``calibrate``/``validate`` refuse it and ``export``
only predicts with it (``calibrate.foreign_reasons``).

Format ``proxylessnas``: ProxylessNAS's lookup table (``mobile_trim.yaml``, Pixel 1, TensorFlow Lite, one
thread, ms) for space ``proxyless``. Each unit of the space maps to one key of the file, named after the
unit's input and output shapes (height x width x channels)::

    stem     Conv-input:224x224x3-output:112x112x32
    first    expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:3-stride:1-idskip:0
    bN=kK_eE expanded_conv-input:HxWxC-output:HxWxC-expand:E-kernel:K-stride:S-idskip:I   (I: residual)
    bN=skip  no key: a skipped block costs nothing (0 ms)
    head     Conv_1-input:7x7x320-output:7x7x1280
    logits   Logits-input:7x7x1280-output:1000

An entry's ``mean`` is the table entry (ms), its relative standard deviation ``sqrt(var) / mean`` the spread.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import HwnasError
from ..registry import Registry
from ..space import SearchSpace, Unit, get_space
from ..space.ops import FixedMB, MBBlock, parse_mb
from .store import default_table_path
from .table import Entry, LatencyTable, now, save_table, space_hash, unit_keys

NOTE = "predicted only, never measured by hwnas"
Importer = Callable[[dict[str, Any], Path], tuple[SearchSpace, dict[str, Entry]]]
FORMATS: Registry[Importer] = Registry("latency table format")


class ImportTableError(HwnasError, ValueError):
    """A published table that cannot be read, or lacks a unit of its space."""


def _hwc(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{h}x{w}x{c}"


def proxylessnas_key(space: SearchSpace, unit: Unit, values: dict[str, Any]) -> str | None:
    """The ``mobile_trim.yaml`` key of ``unit`` at ``values`` (None: a skipped block, 0 ms)."""
    arch = {c.label: values.get(c.label, c.values[0]) for c in space.choices}
    shapes = space.shapes(arch)
    index = {s.name: i for i, s in enumerate(space.layers)}
    first, last = index[unit.layers[0]], index[unit.layers[-1]]
    x, y = shapes[first], shapes[last + 1]
    spec = space.layers[first]
    if isinstance(spec, MBBlock):
        kind = parse_mb(spec.op if isinstance(spec, FixedMB) else arch[spec.label])
        if kind is None:
            return None
        k, e = kind
        idskip = int(spec.stride == 1 and x[0] == y[0])
        return (f"expanded_conv-input:{_hwc(x)}-output:{_hwc(y)}-expand:{e}-kernel:{k}-stride:{spec.stride}"
                f"-idskip:{idskip}")
    names = {"stem": "Conv", "head": "Conv_1"}
    if unit.name in names:
        return f"{names[unit.name]}-input:{_hwc(x)}-output:{_hwc(y)}"
    if unit.name == "logits":
        return f"Logits-input:{_hwc(x)}-output:{y[0]}"
    raise ImportTableError(f"unit {unit.name!r} of space {space.name!r} has no ProxylessNAS table key")


def _entry(raw: Any, key: str, path: Path) -> Entry:
    mean = raw.get("mean") if isinstance(raw, dict) else None
    var = raw.get("var", 0.0) if isinstance(raw, dict) else None
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
             for v in (mean, var))
    if not ok:
        raise ImportTableError(f"{path}: entry {key!r} needs numbers mean >= 0 and var >= 0, got {raw!r}; "
                               "import the file as ProxylessNAS published it")
    return Entry(float(mean), math.sqrt(var) / mean if mean > 0 else 0.0)


@FORMATS.register("proxylessnas")
def proxylessnas(data: dict[str, Any], path: Path) -> tuple[SearchSpace, dict[str, Entry]]:
    """Space ``proxyless`` and its entries from a ProxylessNAS lookup table (``mobile_trim.yaml``).

    Raises:
        ImportTableError: a unit of the space whose key the file lacks (named), or a malformed entry.
    """
    space = get_space("proxyless")
    entries: dict[str, Entry] = {}
    for unit in space.latency_units():
        for values in space.unit_entries(unit):
            key = proxylessnas_key(space, unit, values)
            if key is None:
                entries[unit.key(values)] = Entry(0.0, 0.0)
            elif key not in data:
                raise ImportTableError(f"{path} has no entry {key!r} for unit {unit.key(values)!r} of space "
                                       f"{space.name!r}; import ProxylessNAS's complete table (mobile_trim.yaml)")
            else:
                entries[unit.key(values)] = _entry(data[key], key, path)
    return space, entries


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_table(fmt: str, path: str | Path, device: str, out: str | Path | None = None,
                 force: bool = False) -> tuple[LatencyTable, Path]:
    """Turn the published table ``path`` (format ``fmt``) into an hwnas table labelled imported.

    Args:
        fmt: a name in ``FORMATS`` (``proxylessnas``).
        path: the published file (YAML).
        device: device name of the table (e.g. ``pixel1-tflite``).
        out: table path (default ``<tables>/<device>/<space>.json``).
        force: overwrite an existing table at ``out``.

    Returns:
        The table (``source: "imported"``, Identity overhead 0 ms: the file's entries are whole layers) and
        the path it was written to.

    Raises:
        UnknownNameError: an unknown format; ImportTableError: an unreadable file, a missing unit, an
        existing ``out`` without ``force``.
    """
    importer = FORMATS.get(fmt)
    src = Path(path)
    try:
        data = yaml.safe_load(src.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ImportTableError(f"cannot read {src} as a {fmt} table ({str(err).splitlines()[0]}); pass the "
                               "published YAML file") from None
    if not isinstance(data, dict):
        raise ImportTableError(f"{src} is not a {fmt} table (a mapping of layer key to mean/var/count); pass the "
                               "published YAML file")
    space, entries = importer(data, src)
    dest = Path(out) if out is not None else default_table_path(space.name, device)
    if dest.exists() and not force:
        raise ImportTableError(f"{dest} already exists; pass --force to replace it or --out another path")
    provenance = {"format": fmt, "file": src.name, "sha256": sha256(src), "note": NOTE,
                  "statistic": "mean of the published repeated measurements", "imported": now()}
    table = LatencyTable(space.name, space_hash(space),
                         {"name": device, "cpu_model": f"{device} (imported table)", "isa": [], "threads": 1,
                          "import": provenance},
                         {"threads": 1, "batch": 1, "provider": f"{fmt} (imported)", "statistic": provenance["statistic"]},
                         overhead_ms=0.0, entries={k: entries[k] for k in unit_keys(space)}, source="imported")
    save_table(table, dest)
    return table, dest
