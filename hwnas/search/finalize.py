"""Final training: every candidate of a sweep retrained from scratch with several seeds, scored on the test
split, and the front recomputed on the mean with a 95% interval.

The search's own accuracy (a short fine-tune from shared weights, on the validation split) ranks archs
only as well as its noise allows; differences users care about are tenths of a point. Final training is
the number to rank by: each (arch, seed) pair is one unit of work that writes ``final/<arch_id>-s<seed>.json``
when it finishes, so a killed finalize resumes with the pairs not yet written, exactly like a shard.
``plan`` lists the units, ``train_unit`` runs one (in this process, or as a Ray task next to the shards:
``hwnas.distributed.final``), ``apply`` folds the records into the candidates and rewrites
``candidates.jsonl`` and ``pareto.json`` (``accuracy`` becomes the mean test accuracy, ``accuracy_ci`` its
interval, ``accuracy_runs`` the seeds' accuracies; the search's number stays as ``search_accuracy``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .._io import read_json, write_json
from ..config import FinalConfig, SearchConfig
from ..errors import HwnasError
from ..run import (
    ARCH,
    CANDIDATE,
    CANDIDATES,
    FINAL,
    RunFolder,
    check_candidate,
    read_arch,
    read_jsonl,
    write_candidate,
    write_front,
)
from ..space import get_space
from .pareto import Candidate
from .retrain import train_arch
from .stats import mean_ci

Runner = Callable[[Path, SearchConfig, FinalConfig, list["Unit"]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Unit:
    """One arch trained from scratch with one seed."""

    arch_id: str
    arch: dict[str, Any]
    hparams: dict[str, float]
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arch_id}-s{self.seed}"


def candidates_of(run: str | Path) -> list[Candidate]:
    """A sweep's candidates (``candidates.jsonl``: each shard's result; the front is a subset of them).

    Raises:
        HwnasError: ``run`` is no sweep, or has no finished shard yet.
    """
    folder = RunFolder(run)
    if folder.kind != "sweep":
        raise HwnasError(f"{run} is not a sweep's run folder; finalize ranks the candidates of a sweep (hwnas search "
                         "--targets ... --out RUN_DIR); to retrain one arch use: hwnas train --arch RUN_DIR/arch.json")
    rows = read_jsonl(folder / CANDIDATES)
    if not rows:
        raise HwnasError(f"{run} has no finished shard yet ({CANDIDATES} is empty); finish the sweep first: "
                         f"hwnas search --resume {run}")
    return [check_candidate(c, f"{folder / CANDIDATES} line {i + 1}") for i, c in enumerate(rows)]


def plan(run: str | Path, final: FinalConfig, cands: list[Candidate]) -> list[Unit]:
    """The (arch, seed) units of ``cands``, each arch once (learned hparams from its shard's ``arch.json``)."""
    folder, units, seen = RunFolder(run), [], set()
    for c in sorted(cands, key=lambda c: (c["arch_id"], str(c.get("shard")))):
        if c["arch_id"] in seen:
            continue
        seen.add(c["arch_id"])
        arch_file = folder.shard(str(c.get("shard"))).path / ARCH
        hparams = read_arch(arch_file).hparams if c.get("shard") and arch_file.is_file() else {}
        units += [Unit(c["arch_id"], c["arch"], hparams, s) for s in final.seeds]
    return units


def record_path(run: str | Path, unit: Unit) -> Path:
    return Path(run) / FINAL / f"{unit.name}.json"


def read_unit(run: str | Path, unit: Unit, final: FinalConfig) -> dict[str, Any] | None:
    """A finished unit's record; None when absent or trained with other settings (then it is redone)."""
    path = record_path(run, unit)
    if not path.is_file():
        return None
    try:
        rec = read_json(path, "final-training record")
    except HwnasError:
        return None  # torn or foreign: train again (records are written atomically)
    same = (isinstance(rec, dict) and rec.get("arch_id") == unit.arch_id and rec.get("seed") == unit.seed
            and rec.get("epochs") == final.epochs and rec.get("lr") == final.lr
            and isinstance(rec.get("test_accuracy"), float))
    return rec if same else None


def train_unit(run: str | Path, cfg: SearchConfig, final: FinalConfig, unit: Unit) -> dict[str, Any]:
    """Train one unit from scratch (or read it back) and write its record; returns the record."""
    if (done := read_unit(run, unit, final)) is not None:
        return done
    space = get_space(cfg.space, **cfg.space_args)
    tcfg = cfg.train_config(epochs=final.epochs, lr=final.lr, seed=unit.seed)
    result, _ = train_arch(space, unit.arch, unit.hparams, tcfg, progress=False)
    rec = {**result.to_json(), "seed": unit.seed, "lr": final.lr, "hparams": unit.hparams}
    write_json(record_path(run, unit), rec)
    return rec


def apply(run: str | Path, final: FinalConfig, cands: list[Candidate], records: list[dict[str, Any]]
          ) -> list[Candidate]:
    """Fold the records into the candidates, rewrite ``candidates.jsonl`` and ``pareto.json``; the front."""
    by_arch: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_arch.setdefault(r["arch_id"], []).append(r)
    n = len(final.seeds)
    kind = (f"test accuracy, mean of {n} seed{'s' if n > 1 else ''} trained from scratch for {final.epochs} "
            f"epochs" + (" (95% t-interval, clipped to [0, 1])" if n > 1 else ""))
    out = []
    for c in cands:
        runs = sorted(by_arch.get(c["arch_id"], []), key=lambda r: r["seed"])
        if len(runs) != n:
            raise HwnasError(f"final training of {c['arch_id']} has {len(runs)} of {n} seeds; rerun hwnas finalize")
        mean, lo, hi = mean_ci([r["test_accuracy"] for r in runs])
        if lo is not None:  # an accuracy lies in [0, 1]: the t-interval is clipped to it
            lo, hi = max(0.0, lo), min(1.0, hi)
        first = "search_accuracy" not in c  # a second finalize keeps the search's own number
        out.append({**c, "accuracy": mean, "accuracy_kind": kind,
                    "accuracy_ci": [lo, hi] if lo is not None else None,
                    "accuracy_runs": [r["test_accuracy"] for r in runs], "final_seeds": list(final.seeds),
                    "final_epochs": final.epochs, "final_seconds": round(sum(r["seconds"] for r in runs), 2),
                    **({"search_accuracy": c["accuracy"], "search_accuracy_kind": c.get("accuracy_kind")}
                       if first else {})})
    for c in out:  # each shard's candidate.json says the same as candidates.jsonl (the report reads both)
        shard = RunFolder(run).shard(str(c.get("shard"))).path
        if c.get("shard") and (shard / CANDIDATE).is_file():
            write_candidate(shard, c)
    return write_front(run, out)


def finalize(run: str | Path, final: FinalConfig, *, progress: bool = True,
             runner: Runner | None = None) -> list[Candidate]:
    """Final training of a sweep's candidates (resumable); returns the new front.

    ``runner(run, cfg, final, units)`` trains units and returns their records (``hwnas.distributed.final``
    runs them as Ray tasks); None trains them here, one after another.
    """
    run = Path(run)
    folder = RunFolder(run)
    with folder.writer("hwnas finalize"):
        cfg = folder.read_settings()[1][0]
        cands = candidates_of(run)
        units = plan(run, final, cands)
        done = {u.name: r for u in units if (r := read_unit(run, u, final)) is not None}
        todo = [u for u in units if u.name not in done]
        if progress:
            print(f"final training: {len(units)} runs ({len(units) // len(final.seeds)} archs x "
                  f"{len(final.seeds)} seeds, {final.epochs} epochs each); {len(done)} already done", flush=True)
        if runner is not None and todo:
            records = runner(run, cfg, final, todo)
        else:
            records = [train_unit(run, cfg, final, u) for u in tqdm(todo, desc="finalize", unit="run",
                                                                     disable=not progress, dynamic_ncols=True)]
        return apply(run, final, cands, [*done.values(), *records])
