"""Read a run folder (one search or a sweep) into one small structure the plots and the Markdown share.

Two kinds of folder:

* one search (``hwnas search --out R``): ``config.yaml``, ``history.jsonl`` and, once finished, ``arch.json``;
* a sweep (``hwnas search --targets ... --seeds ... --out R``): ``config.yaml``, ``candidates.jsonl``,
  ``pareto.json`` and ``shards/<key>/`` (each a one-search folder plus ``candidate.json``).

A single search is presented as a sweep of one shard whose candidate is built from ``arch.json``, so
every later step handles both kinds the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HwnasError
from ..run import (
    ARCH,
    CANDIDATES,
    CONFIG,
    HISTORY,
    SHARDS,
    RunFolder,
    check_candidate,
    read_arch,
    read_candidate,
    read_front,
    read_jsonl,
)
from ..search.pareto import Candidate, pareto_front

SINGLE_FILES = ("config.yaml", "history.jsonl", "arch.json")
SWEEP_FILES = ("config.yaml", "candidates.jsonl", "pareto.json", "shards/")


@dataclass
class Shard:
    """One search of the run: its key, per-epoch history, ``arch.json`` and candidate (None if unfinished)."""

    key: str
    path: Path
    history: list[dict[str, Any]]
    arch: dict[str, Any]
    candidate: Candidate | None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def target_ms(self) -> float | None:
        """The shard's latency budget (ms), or None."""
        for src in (self.candidate or {}, self.arch, self.config):
            t = src.get("target_latency_ms", src.get("target_ms"))
            if t is not None:
                return float(t)
        return None

    @property
    def has_latency(self) -> bool:
        """Whether the search ran with a latency table (its history records E[T])."""
        return any("expected_latency_ms_end" in r for r in self.history)


@dataclass
class Run:
    """A run folder as read: ``kind`` is ``"search"`` or ``"sweep"``."""

    path: Path
    kind: str
    config: dict[str, Any]
    shards: list[Shard]
    candidates: list[Candidate]
    front: list[Candidate]
    notes: list[str] = field(default_factory=list)  # things the reader had to skip or assume

    @property
    def finished(self) -> list[Shard]:
        return [s for s in self.shards if s.candidate is not None]

    @property
    def with_latency(self) -> list[Candidate]:
        """Candidates that have a latency (measured or predicted)."""
        return [c for c in self.candidates if latency_ms(c) is not None]

    @property
    def device(self) -> str | None:
        """The latency table's device (candidates' ``latency_device``, else arch.json's ``device``), or None."""
        for c in self.candidates:
            if c.get("latency_device"):
                return str(c["latency_device"])
        for s in self.shards:
            if s.arch.get("latency_device") or s.arch.get("device"):
                return str(s.arch.get("latency_device") or s.arch["device"])
        return None

    def best_shard(self) -> Shard | None:
        """The shard of the most accurate front entry (else of the most accurate candidate, else the first)."""
        pool = self.front or self.candidates
        if pool:
            key = max(pool, key=lambda c: c.get("accuracy") or 0.0).get("shard")
            for s in self.shards:
                if s.key == key:
                    return s
        return self.shards[0] if self.shards else None


def latency_source(c: Candidate) -> str | None:
    """Where the latency ``latency_ms(c)`` gives comes from: ``"measured"`` (timed on the table's own device),
    ``"predicted"`` (the table's prediction; e.g. the table is another device's) or None (no latency).

    A run written before ``latency_source`` existed: a measured value counts as measured on the recorded device.
    """
    if c.get("latency_source") != "predicted" and c.get("measured_latency_ms") is not None:
        return "measured"
    return "predicted" if c.get("predicted_latency_ms") is not None else None


def latency_device(c: Candidate, default: str | None = None) -> str | None:
    """The device the candidate's latency belongs to (the table's device), else ``default``."""
    return c.get("latency_device") or default


def measurement(c: Candidate) -> dict[str, Any]:
    """The candidate's measurement record (``host``, ``median_ms``, ``spread``, ``noisy``, ...), or {}."""
    m = c.get("measurement")
    return m if isinstance(m, dict) else {}


def is_noisy(c: Candidate) -> bool:
    """Whether the candidate's measured latency could not be made quiet (marked ``noisy``)."""
    return latency_source(c) == "measured" and bool(measurement(c).get("noisy"))


def source_label(c: Candidate, default_device: str | None = None) -> str:
    """``measured (device X)``, ``predicted (device X)`` (plus ``, noisy ±S%``), or ``-`` without a latency."""
    src = latency_source(c)
    if src is None:
        return "-"
    device = latency_device(c, default_device)
    label = f"{src} (device {device})" if device else src
    if is_noisy(c):
        spread = measurement(c).get("spread")
        label += ", noisy" + (f" ±{float(spread):.1%}" if spread is not None else "")
    return label


def latency_ms(c: Candidate) -> float | None:
    """Measured latency when measured on the table's device, else predicted, else None (plots and tables)."""
    src = latency_source(c)
    return None if src is None else float(c[f"{src}_latency_ms"])


def measured_on(cands: list[Candidate], device: str | None) -> list[Candidate]:
    """Candidates measured on ``device`` (the table's device) that also have a prediction: the only ones whose
    prediction and measurement may be compared. ``device`` None: every measured candidate (older runs)."""
    return [c for c in cands if latency_source(c) == "measured" and c.get("predicted_latency_ms") is not None
            and float(c["measured_latency_ms"]) > 0
            and (device is None or latency_device(c, device) == device)]


def prediction_errors(cands: list[Candidate], device: str | None = None) -> list[float]:
    """``|predicted - measured| / measured`` of every candidate measured on ``device`` (``measured_on``)."""
    return [abs(float(c["predicted_latency_ms"]) - float(c["measured_latency_ms"])) / float(c["measured_latency_ms"])
            for c in measured_on(cands, device)]


def not_a_run(path: Path, why: str) -> HwnasError:
    """The error for a folder that is not a run folder: what was expected and which command writes it."""
    return HwnasError(
        f"{path} {why}: a run folder holds either {', '.join(SINGLE_FILES)} (written by "
        f"`hwnas search --out {path}`) or {', '.join(SWEEP_FILES)} (written by "
        f"`hwnas search --targets T1,T2 --out {path}`); pass the --out folder of a search")


def _read_config(path: Path) -> dict[str, Any]:
    return RunFolder(path).read_config() if (path / CONFIG).is_file() else {}


def _candidate_from_arch(key: str, arch: dict[str, Any], cfg: dict[str, Any]) -> Candidate:
    """A single search's candidate, from its ``arch.json`` (accuracy = supernet validation accuracy)."""
    return {"arch": arch.get("arch", {}), "arch_id": arch.get("arch_id", "?"),
            "accuracy": arch.get("supernet_val_accuracy"),
            "accuracy_kind": "validation accuracy with the supernet's weights (no fine-tune)",
            "predicted_latency_ms": arch.get("predicted_latency_ms"),
            "measured_latency_ms": arch.get("measured_latency_ms"),
            **{k: arch[k] for k in ("latency_source", "latency_device", "measurement", "latency_targets") if k in arch},
            "target_latency_ms": arch.get("target_latency_ms", cfg.get("target_ms")), "shard": key,
            "seed": cfg.get("seed"), "relaxation": cfg.get("relaxation"),
            "supernet_val_accuracy": arch.get("supernet_val_accuracy"),
            "search_seconds": arch.get("search_seconds")}


def _read_shard(key: str, d: Path, notes: list[str], fallback: Candidate | None = None) -> Shard:
    history = read_jsonl(d / HISTORY, notes)
    arch = read_arch(d / ARCH).to_json() if (d / ARCH).is_file() else {}
    cand = read_candidate(d) or fallback
    return Shard(key, d, history, arch, cand, _read_config(d))


def _load_search(run: Path) -> Run:
    notes: list[str] = []
    cfg = _read_config(run)
    shard = _read_shard(run.name or "run", run, notes)
    if not shard.history and not shard.arch:
        raise not_a_run(run, "has an empty history.jsonl and no arch.json")
    if shard.arch and shard.candidate is None:  # a shard folder of a sweep keeps its candidate.json
        shard.candidate = _candidate_from_arch(shard.key, shard.arch, cfg)
    elif not shard.arch:
        notes.append("the search has not finished (no arch.json): the report shows the epochs so far")
    cands = [shard.candidate] if shard.candidate else []
    return Run(run, "search", cfg, [shard], cands, _front(cands), notes)


def _load_sweep(run: Path) -> Run:
    notes: list[str] = []
    cfg = _read_config(run)
    listed = [check_candidate(c, f"{run / CANDIDATES} line {i + 1}")
              for i, c in enumerate(read_jsonl(run / CANDIDATES, notes))]
    by_key = {str(c.get("shard")): c for c in listed}
    root = run / SHARDS
    keys = sorted({p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()) or sorted(by_key)
    shards = [_read_shard(k, root / k, notes, by_key.get(k)) for k in keys]
    cands = [s.candidate for s in shards if s.candidate is not None]
    cands += [c for k, c in by_key.items() if k not in keys]
    unfinished = [s.key for s in shards if s.candidate is None]
    if unfinished:
        notes.append(f"{len(unfinished)} shard(s) have not finished: {', '.join(unfinished)}")
    front = read_front(run)
    if front is None:
        front = _front(cands)  # no pareto.json yet: compute it as the sweep would
    return Run(run, "sweep", cfg, shards, cands, front, notes)


def _front(cands: list[Candidate]) -> list[Candidate]:
    usable = [c for c in cands if latency_ms(c) is not None and c.get("accuracy") is not None]
    return pareto_front(usable)


def load_run(run_dir: str | Path) -> Run:
    """Read ``run_dir`` (a single search or a sweep).

    Raises:
        HwnasError: the folder does not exist or is not a run folder (the message lists the files expected
            and the command that writes them), or one of its JSON files is unreadable.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise not_a_run(run, "does not exist")
    kind = RunFolder(run).kind
    if kind == "sweep":
        return _load_sweep(run)
    if kind == "search" and ((run / HISTORY).is_file() or (run / ARCH).is_file()):
        return _load_search(run)
    raise not_a_run(run, "is not a run folder")


def interval(c: dict[str, Any]) -> tuple[float, float] | None:
    """The candidate's ``accuracy_ci`` as ``(lo, hi)`` fractions, or None (absent, None or malformed)."""
    ci = c.get("accuracy_ci")
    try:
        lo, hi = (float(v) for v in ci)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and lo <= hi else None


def seeds_of(c: dict[str, Any]) -> int | None:
    """How many seeds the candidate's accuracy is the mean of (``accuracy_runs``), or None."""
    runs = c.get("accuracy_runs")
    return len(runs) if isinstance(runs, list) and runs else None
