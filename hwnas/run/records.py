"""Typed records of a run folder, validated when read: arch files, candidates, the front, JSON lines."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import read_json, write_json
from ..errors import HwnasError
from .layout import ARCH, CANDIDATE, CANDIDATES, EXPORT_FORMAT, HISTORY, PARETO, WORKER


def _number(obj: dict[str, Any], key: str, where: str, *, optional: bool = True) -> None:
    v = obj.get(key)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise HwnasError(f"{where}: {key} must be a finite number, got {v!r}; {_REGEN}")


_REGEN = "regenerate the file (rerun the command that wrote it) or pass the right folder"


@dataclass
class ArchRecord:
    """``arch.json``: a derived arch with everything needed to rebuild it anywhere."""

    space: str
    space_args: dict[str, Any]
    arch: dict[str, Any]
    arch_id: str
    hparams: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)  # latencies, accuracies, seconds, device, ...

    def build_space(self) -> Any:
        from ..space import get_space

        return get_space(self.space, **self.space_args)

    def to_json(self) -> dict[str, Any]:
        return {"space": self.space, "space_args": self.space_args, "arch": self.arch, "arch_id": self.arch_id,
                "hparams": self.hparams, **self.extra}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> ArchRecord:
        """Validate an arch object (the arch is checked against its space; the id recomputed).

        Raises:
            HwnasError: not an arch object, an unknown space, an arch or hparams outside the space.
        """
        if not isinstance(obj, dict) or not isinstance(obj.get("space"), str):
            raise HwnasError(f"{where} is not an arch file (it has no 'space' name); use an arch.json written by "
                             "`hwnas search` or a named arch SPACE:NAME (e.g. proxyless:proxylessnas-mobile)")
        args = obj.get("space_args") or {}
        space = space_from(obj["space"], args, where)
        try:
            arch, hparams = space.from_json(obj)
        except HwnasError as err:
            raise HwnasError(f"{where}: {err}") from None
        extra = {k: v for k, v in obj.items() if k not in ("space", "space_args", "arch", "arch_id", "hparams")}
        return cls(space.name, dict(args), arch, space.arch_id(arch), hparams, extra)


def read_arch(path: str | Path) -> ArchRecord:
    """Read and validate an arch file (``RUN/arch.json`` or any file ``hwnas train`` takes), or a named arch
    ``SPACE:NAME`` of ``hwnas.space.NAMED_ARCHS`` (e.g. ``proxyless:proxylessnas-mobile``): the one resolver of
    every command that takes an arch.

    Raises:
        HwnasError: see ``ArchRecord.from_json``; an unknown ``SPACE:NAME`` (the known names are listed).
    """
    from ..space import is_named, named_arch

    if is_named(path):
        return ArchRecord.from_json(named_arch(str(path)), f"named arch {path}")
    return ArchRecord.from_json(read_json(path, "arch file"), f"arch file {path}")


def update_arch(folder: str | Path, fields: dict[str, Any]) -> None:
    """Set ``fields`` in a folder's ``arch.json`` (the sweep's measurement phase adds its latencies); no-op
    when the folder has none yet."""
    path = Path(folder) / ARCH
    if path.is_file():
        write_json(path, {**read_json(path, "arch file"), **fields})


def space_from(name: Any, args: Any, where: str) -> Any:
    """The ``SearchSpace`` a record names (``space`` + ``space_args``), never a guess.

    Raises:
        HwnasError: no space name, space_args not a mapping, an unknown space or arguments it refuses.
    """
    from .._checks import check_space_args
    from ..space import get_space

    if not isinstance(name, str):
        raise HwnasError(f"{where} names no search space (got {name!r}); {_REGEN}")
    args = args or {}
    if not isinstance(args, dict):
        raise HwnasError(f"{where}: space_args must be a mapping, got {args!r}; {_REGEN}")
    try:
        check_space_args(name, args)
    except HwnasError as err:
        raise HwnasError(f"{where}: {err}") from None
    return get_space(name, **args)


_CANDIDATE_NUMBERS = ("accuracy", "predicted_latency_ms", "measured_latency_ms", "target_latency_ms")


def check_candidate(obj: Any, where: str) -> dict[str, Any]:
    """A candidate record (a line of candidates.jsonl, an entry of pareto.json, candidate.json), validated.

    Raises:
        HwnasError: not a mapping, no arch/arch_id/shard, or a number that is not a finite number.
    """
    if not isinstance(obj, dict):
        raise HwnasError(f"{where} is not a candidate object (got {type(obj).__name__}); {_REGEN}")
    if not isinstance(obj.get("arch"), dict) or not isinstance(obj.get("arch_id"), str):
        raise HwnasError(f"{where} has no 'arch' object and 'arch_id'; {_REGEN}")
    if not isinstance(obj.get("shard", ""), str):
        raise HwnasError(f"{where}: shard must be a string, got {obj.get('shard')!r}; {_REGEN}")
    for k in _CANDIDATE_NUMBERS:
        _number(obj, k, where)
    _check_provenance(obj, where)
    check_targets(obj, where)
    return obj


def check_targets(obj: dict[str, Any], where: str) -> None:
    """``latency_targets`` of a record (absent in runs from before several targets): a list, primary first, of
    ``{device, table, budget_ms, predicted_latency_ms}`` (``hwnas.search.targets``).

    Raises:
        HwnasError: not such a list, or an entry without its names or with a number that is not finite.
    """
    targets = obj.get("latency_targets")
    if targets is None:
        return
    if not isinstance(targets, list) or not targets:
        raise HwnasError(f"{where}: latency_targets must be a non-empty list, got {targets!r}; {_REGEN}")
    for i, t in enumerate(targets):
        at = f"{where} latency_targets[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("device"), str) or not isinstance(t.get("table"), str):
            raise HwnasError(f"{at} must be an object with 'device' and 'table' names, got {t!r}; {_REGEN}")
        _number(t, "budget_ms", at)
        _number(t, "predicted_latency_ms", at, optional=False)


LATENCY_SOURCES = ("measured", "predicted", None)


def _check_provenance(obj: dict[str, Any], where: str) -> None:
    """``latency_source`` / ``latency_device`` / ``measurement`` of a candidate (absent in older runs).

    "measured": a ``measured_latency_ms`` taken on the table's own device, with its ``measurement`` record;
    "predicted": a table of another device, so no ``measured_latency_ms``; None: no latency table.
    """
    src = obj.get("latency_source")
    if src not in LATENCY_SOURCES:
        raise HwnasError(f"{where}: latency_source must be 'measured', 'predicted' or null, got {src!r}; {_REGEN}")
    if obj.get("latency_precision", "fp32") not in ("fp32", "int8"):
        raise HwnasError(f"{where}: latency_precision must be 'fp32' or 'int8', got {obj.get('latency_precision')!r}; "
                         f"{_REGEN}")
    if not isinstance(obj.get("latency_device", ""), (str, type(None))):
        raise HwnasError(f"{where}: latency_device must be a device name, got {obj.get('latency_device')!r}; {_REGEN}")
    if src == "predicted" and obj.get("measured_latency_ms") is not None:
        raise HwnasError(f"{where}: a 'predicted' latency (table of device {obj.get('latency_device')!r}) cannot "
                         f"carry a measured_latency_ms; {_REGEN}")
    m = obj.get("measurement")
    if src == "measured" and (obj.get("measured_latency_ms") is None or not isinstance(m, dict)):
        raise HwnasError(f"{where}: a 'measured' latency needs measured_latency_ms and its measurement record; "
                         f"{_REGEN}")
    if m is None:
        return
    if not isinstance(m, dict) or not isinstance(m.get("noisy"), bool) or not isinstance(m.get("host"), dict):
        raise HwnasError(f"{where}: measurement must be an object with 'host' and a boolean 'noisy'; {_REGEN}")
    for k in ("median_ms", "spread", "probe_ratio", "attempts"):
        _number(m, k, f"{where} measurement", optional=False)


def read_candidate(folder: str | Path) -> dict[str, Any] | None:
    """A finished shard's ``candidate.json``, or None while it is unfinished."""
    path = Path(folder) / CANDIDATE
    if not path.is_file():
        return None
    return check_candidate(read_json(path, "shard candidate"), str(path))


def write_candidate(folder: str | Path, cand: dict[str, Any]) -> None:
    write_json(Path(folder) / CANDIDATE, cand)


def read_front(run: str | Path) -> list[dict[str, Any]] | None:
    """``pareto.json`` (a list of candidates), None when absent.

    Raises:
        HwnasError: it is not a list, or an entry is not a candidate.
    """
    path = Path(run) / PARETO
    if not path.is_file():
        return None
    obj = read_json(path, "Pareto front")
    if not isinstance(obj, list):
        raise HwnasError(f"{path} must be a list of candidates, got a {type(obj).__name__}; {_REGEN}")
    return [check_candidate(c, f"{path} entry {i}") for i, c in enumerate(obj)]


def read_jsonl(path: str | Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """JSON lines (history, candidates); a broken line (a process killed mid-write) is skipped and noted."""
    p = Path(path)
    if not p.is_file():
        return []
    rows, bad = [], 0
    for line in p.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad += 1
    if bad and notes is not None:
        notes.append(f"{p}: skipped {bad} unreadable line(s)")
    return rows


def record_start(folder: str | Path, counter: str, **fields: Any) -> int:
    """Count one more start in the shard's ``worker.json`` (with where it runs); returns the new count."""
    info = Path(folder) / WORKER
    data = read_json(info, "worker record") if info.is_file() else {}
    data = data if isinstance(data, dict) else {}
    n = int(data.get(counter) or 0) + 1
    write_json(info, {**data, **fields, counter: n})
    return n


def progress(folder: str | Path) -> tuple[int, bool, dict[str, Any]]:
    """A search folder's progress: epochs done, whether its candidate is written, the last history record."""
    history = read_jsonl(Path(folder) / HISTORY)
    return len(history), (Path(folder) / CANDIDATE).is_file(), history[-1] if history else {}


def write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite a JSON-lines file atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def write_front(run: str | Path, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite ``candidates.jsonl`` (all, sorted by shard) and ``pareto.json`` atomically; return the front."""
    from ..search.pareto import pareto_front

    run = Path(run)
    ordered = sorted(candidates, key=lambda c: str(c.get("shard")))
    write_lines(run / CANDIDATES, ordered)
    front = pareto_front(ordered)
    write_json(run / PARETO, front)
    return front


# ---- export folders ----------------------------------------------------------------------------------

def is_export(folder: str | Path) -> bool:
    """Whether ``folder`` holds an hwnas export (its manifest says so), which ``export --out`` may replace."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return False
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and obj.get("format") == EXPORT_FORMAT
