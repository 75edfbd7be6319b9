"""Latency tables: ``latency_tables/<device>/<space>.json``, diffable JSON with full provenance.

File layout (schema ``hwnas-latency-table/1``)::

    {"schema": ..., "space": {"name", "hash", "units"}, "device": {"name", "cpu_model", "isa", ...},
     "protocol": {runs, trials, threads, opt_level, ...}, "source": "profile"|"devicekit"|"imported",
     "precision": "fp32"|"int8" (absent in older tables: fp32), "quantization": null | {int8 recipe},
     "created", "updated", "hwnas_version",
     "overhead_ms": <Identity model>, "overhead_spread": ...,
     "entries": {"<unit key>": {"median_ms": ..., "spread": ...}, ...},
     "calibration": null | {"c0": ..., "scales": {unit: a_u}, ...}}

Writes are atomic (temp file + ``os.replace``); loads check the schema, the space hash and completeness,
and warn when the table was measured under other threads, onnxruntime version or ISA than this machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import HwnasError
from ..space import SearchSpace, get_space
from .protocol import Protocol as _Protocol
from .protocol import ProtocolError, host_info

SCHEMA = "hwnas-latency-table/1"
PRECISIONS = ("fp32", "int8")  # what a table times: fp32 ONNX models, or the int8 QDQ models export ships


class TableError(HwnasError, ValueError):
    """A latency table that is missing, corrupted, incomplete or made for another space."""


class TableWarning(UserWarning):
    """A table measured under other conditions (threads, onnxruntime version, ISA) than this machine."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def hwnas_version() -> str:
    try:
        return metadata.version("hwnas")
    except metadata.PackageNotFoundError:
        return "unknown"


def space_hash(space: SearchSpace) -> str:
    """sha256 (16 hex digits) of what the table's entries depend on.

    Hashed: input shape, the layer specs, and each unit's name, layers, labels and label values.
    """
    units = [[u.name, list(u.layers), [[lab, [str(v) for v in space.choice(lab).values]] for lab in u.labels]]
             for u in space.latency_units()]
    payload = {"input_shape": list(space.input_shape), "layers": [repr(s) for s in space.layers], "units": units}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def unit_keys(space: SearchSpace) -> list[str]:
    """Every table key the space needs, unit by unit."""
    return [u.key(v) for u in space.latency_units() for v in space.unit_entries(u)]


@dataclass(frozen=True)
class Entry:
    """One measured unit: median of trial medians (ms) and the trials' relative spread."""

    median_ms: float
    spread: float = 0.0

    def __post_init__(self) -> None:
        for name in ("median_ms", "spread"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


@dataclass
class LatencyTable:
    """In-memory table. ``calibration`` is the dict written by ``hwnas latency calibrate`` (or None)."""

    space: str
    space_hash: str
    device: dict[str, Any]
    protocol: dict[str, Any]
    overhead_ms: float | None = None
    overhead_spread: float = 0.0
    entries: dict[str, Entry] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    source: str = "profile"
    precision: str = "fp32"
    quantization: dict[str, Any] | None = None
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)
    hwnas_version: str = field(default_factory=hwnas_version)

    def __post_init__(self) -> None:
        if not self.device.get("name"):
            raise ValueError("a latency table needs a device name")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.overhead_ms is not None and not (_finite(self.overhead_ms) and self.overhead_ms >= 0):
            raise ValueError(f"overhead_ms must be finite and >= 0, got {self.overhead_ms!r}")
        if not (_finite(self.overhead_spread) and self.overhead_spread >= 0):
            raise ValueError(f"overhead_spread must be finite and >= 0, got {self.overhead_spread!r}")

    @classmethod
    def new(cls, space: SearchSpace, device: str, protocol: _Protocol, source: str = "profile",
            host: dict | None = None, precision: str = "fp32") -> LatencyTable:
        """An empty table for ``space`` measured on this host (or ``host`` provenance) under ``protocol``, of
        fp32 models or (``precision="int8"``) of models quantised as export quantises them."""
        from .quantize import table_settings

        info = dict(host if host is not None else host_info(protocol))
        return cls(space.name, space_hash(space), {"name": device, **info}, protocol.to_dict(), source=source,
                   precision=precision, quantization=table_settings() if precision == "int8" else None)

    def missing(self, space: SearchSpace) -> list[str]:
        """Unit keys the space needs that the table lacks (empty when complete)."""
        return [k for k in unit_keys(space) if k not in self.entries]

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "space": {"name": self.space, "hash": self.space_hash, "units": len(self.entries)},
                "device": self.device, "protocol": self.protocol, "source": self.source,
                "precision": self.precision, "quantization": self.quantization, "created": self.created,
                "updated": self.updated, "hwnas_version": self.hwnas_version, "overhead_ms": self.overhead_ms,
                "overhead_spread": self.overhead_spread,
                "entries": {k: {"median_ms": e.median_ms, "spread": e.spread} for k, e in sorted(self.entries.items())},
                "calibration": self.calibration}

    @classmethod
    def from_json(cls, obj: Any, where: str = "latency table", path: str | Path = "TABLE") -> LatencyTable:
        """Parse and validate the file format (``path`` goes into the commands that fix a bad table).

        Raises:
            TableError: wrong schema, missing fields, a malformed entry or calibration number (the key is
                named, with the ``hwnas profile`` or ``hwnas latency calibrate`` command that fixes it).
        """
        if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
            got = obj.get("schema") if isinstance(obj, dict) else type(obj).__name__
            raise TableError(f"{where} is not an hwnas latency table (schema {got!r}, expected {SCHEMA!r}); "
                             "regenerate it with `hwnas profile`")
        try:
            entries = {}
            for key, e in obj["entries"].items():
                try:
                    entries[key] = Entry(e["median_ms"], e.get("spread", 0.0))
                except (ValueError, KeyError, TypeError, AttributeError) as err:
                    try:
                        cmd = profile_command(obj["space"]["name"], obj["device"]["name"], path,
                                              obj.get("precision", "fp32"))
                        again = f"`{cmd}`"
                    except (KeyError, TypeError):
                        again = "`hwnas profile`"
                    raise TableError(f"{where} has a malformed entry {key!r} ({err}); delete the entry and re-run "
                                     f"{again} to measure it again") from None
            if not isinstance(obj["protocol"], dict):
                raise TableError(f"{where} has protocol {obj['protocol']!r} (must be a mapping of the timing "
                                 "settings); regenerate it with `hwnas profile`")
            try:
                _Protocol.from_dict(obj["protocol"])
            except ProtocolError as err:
                raise TableError(f"{where} records a protocol that cannot work ({err}); regenerate it with "
                                 "`hwnas profile`") from None
            calib = obj.get("calibration")
            if calib is not None:
                check_calibration(calib, where, f"re-run `hwnas latency calibrate --table {path}` (it measures "
                                                "again and replaces the calibration block)")
            return cls(space=obj["space"]["name"], space_hash=obj["space"]["hash"], device=obj["device"],
                       protocol=obj["protocol"], overhead_ms=obj.get("overhead_ms"),
                       overhead_spread=obj.get("overhead_spread", 0.0), entries=entries, calibration=calib,
                       source=obj.get("source", "profile"), precision=obj.get("precision", "fp32"),
                       quantization=obj.get("quantization"), created=obj.get("created", ""),
                       updated=obj.get("updated", ""), hwnas_version=obj.get("hwnas_version", "unknown"))
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            if isinstance(err, TableError):
                raise
            raise TableError(f"{where} is missing or has a malformed field ({err!s}); regenerate it with "
                             "`hwnas profile`") from None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_calibration(calib: Any, where: str, fix: str) -> None:
    """Check a calibration block: ``c0`` and every number in it finite, per-unit ``scales`` > 0 (a scale
    <= 0 predicts faster-than-free or negative latencies), ``measured_ms`` >= 0.

    Raises:
        TableError: ``<where> has calibration <key> = <value> (<what is allowed>); <fix>``.
    """
    def bad(key: str, value: Any, allowed: str) -> TableError:
        return TableError(f"{where} has calibration {key} = {value!r} ({allowed}); {fix}")

    if not isinstance(calib, dict):
        raise bad("block", calib, "must be a mapping with c0, scales, boundary")
    if not _finite(calib.get("c0")):
        raise bad("c0", calib.get("c0"), "the constant term must be a finite number of ms")
    rules = {"scales": (lambda v: v > 0, "a per-unit scale must be a finite number > 0"),
             "boundary": (lambda v: True, "a per-unit boundary cost must be a finite number"),
             "measured_ms": (lambda v: v >= 0, "a measured latency must be a finite number >= 0")}
    for key, value in calib.items():
        if key in rules:
            ok, allowed = rules[key]
            items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
            if items is None or (key == "scales" and not isinstance(value, dict)):
                raise bad(key, value, "must be a mapping of unit to number" if key == "scales"
                          else "must be a mapping or list of numbers")
            for k, v in items:
                if not (_finite(v) and ok(v)):
                    raise bad(f"{key}[{k!r}]", v, allowed)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
            raise bad(key, value, "must be a finite number")


def profile_command(space: str, device: str, path: str | Path, precision: str = "fp32") -> str:
    """The exact command that measures (or completes) a table."""
    tail = f" --precision {precision}" if precision != "fp32" else ""
    return f"hwnas profile --space {space} --device {device} --out {path}{tail}"


def check_precision(table: LatencyTable, precision: str, path: str | Path = "<table>") -> None:
    """Raise ``TableError`` when ``table`` times models of another precision than ``precision``: an int8
    table never serves an fp32 search or export, nor an fp32 table an int8 one."""
    if table.precision != precision:
        raise TableError(f"latency table {path} times {table.precision} models, not {precision}; pass an "
                         f"{precision} table (measure one with `hwnas profile --space {table.space} --precision "
                         f"{precision}`) or use --precision {table.precision}")


def save_table(table: LatencyTable, path: str | Path) -> Path:
    """Write ``table`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.updated = now()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(table.to_json(), f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_table(path: str | Path, *, calibration: bool = True) -> LatencyTable:
    """Read a table file and check its schema only (no space or completeness check).

    Args:
        path: the JSON file.
        calibration: False drops the calibration block unread (``hwnas latency calibrate`` replaces it, so a
            broken one must not stop it).

    Raises:
        TableError: missing file, invalid or truncated JSON, wrong schema, malformed entry or calibration.
    """
    p = Path(path)
    if not p.is_file():
        raise TableError(f"latency table {p} does not exist; measure it with `hwnas profile --space SPACE "
                         f"--device DEVICE --out {p}` or pass an existing --table")
    try:
        obj = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TableError(f"latency table {p} is corrupted or truncated ({err}); restore it from git or delete "
                         "it and re-run `hwnas profile`") from None
    if not calibration and isinstance(obj, dict):
        obj = {**obj, "calibration": None}
    return LatencyTable.from_json(obj, where=f"latency table {p}", path=p)


def check_complete(table: LatencyTable, space: SearchSpace, path: str | Path = "<table>") -> None:
    """Raise ``TableError`` naming the first missing unit key and the command that measures it."""
    if table.overhead_ms is None:
        raise TableError(f"latency table {path} has no Identity overhead yet; complete it with "
                         f"`{profile_command(space.name, table.device['name'], path, table.precision)}`")
    missing = table.missing(space)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TableError(f"latency table {path} has no entry for unit {missing[0]!r}{more}; fill it with "
                         f"`{profile_command(space.name, table.device['name'], path, table.precision)}`")


def load_table(path: str | Path, space: SearchSpace | None = None, *, complete: bool = True,
               threads: int = 1, check_host: bool = True, calibration: bool = True,
               precision: str | None = None) -> LatencyTable:
    """Read a table and check it against its space (and this machine).

    Args:
        path: the JSON file.
        space: the space it must describe (default: the registered space the table names).
        complete: require an entry for every unit key of the space.
        threads: the thread count the predictions will be used with.
        check_host: warn (``TableWarning``) for each ``fingerprint.mismatches`` of the table (CPU, ISA, caches,
            cores, onnxruntime version, threads, ...).
        calibration: False drops the calibration block unread (see ``read_table``).
        precision: require a table of this precision (``check_precision``); None accepts either.

    Returns:
        The parsed ``LatencyTable``.

    Raises:
        TableError: see ``read_table``; a table of another space or another version of it (hash differs);
            a missing unit (the message names the key and the exact ``hwnas profile`` command).
    """
    table = read_table(path, calibration=calibration)
    if space is None:
        space = get_space(table.space)
    if table.space != space.name:
        raise TableError(f"latency table {path} is for space {table.space!r}, not {space.name!r}; pass the "
                         f"table of {space.name!r}")
    if table.space_hash != space_hash(space):
        raise TableError(f"latency table {path} was measured for another version of space {space.name!r} (hash "
                         f"{table.space_hash} != {space_hash(space)}); re-measure it with "
                         f"`{profile_command(space.name, table.device['name'], f'{path}.new', table.precision)}` "
                         "and replace the old file")
    if precision is not None:
        check_precision(table, precision, path)
    if complete:
        check_complete(table, space, path)
    if check_host and table.source != "imported":  # an imported table names its device: no host to compare
        from .fingerprint import mismatches

        for why in mismatches(table, threads):
            warnings.warn(f"latency table {path} may not describe this machine: {why}", TableWarning,
                          stacklevel=2)
    return table
