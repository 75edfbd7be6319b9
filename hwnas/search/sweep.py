"""Shards and sweeps: one search per latency target (x seed), each scored after a fine-tune step.

``run_shard`` is one complete unit of work (search, derive under the budget, fine-tune from the
supernet's weights, score on the validation split, measure latency); it writes everything into its own
folder and returns its candidate, so that the Ray driver (``hwnas.distributed``) can run shards as
actors while this module runs them one after another in one process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .._io import write_json
from ..config import SearchConfig, TrainConfig, write_yaml
from ..space import get_space
from .loop import SearchResult, run_search
from .pareto import Candidate, write_front
from .retrain import train_arch


@dataclass(frozen=True)
class ShardSpec:
    """One shard: a search config (its target and seed set) and its folder name under ``shards/``."""

    key: str
    cfg: SearchConfig


def shard_specs(cfg: SearchConfig, targets: list[float | None], seeds: list[int]) -> list[ShardSpec]:
    """The cross product targets x seeds, with stable keys like ``t0.04-s0``."""
    out = []
    for t in targets:
        for s in seeds:
            key = f"t{t:g}-s{s}" if t is not None else f"s{s}"
            out.append(ShardSpec(key, cfg.replace(target_ms=t, seed=s)))
    return out


def accuracy_kind(cfg: SearchConfig) -> str:
    if cfg.fine_tune_epochs:
        return f"validation accuracy after a {cfg.fine_tune_epochs}-epoch fine-tune from the supernet's weights"
    return "validation accuracy with the supernet's weights (no fine-tune)"


def run_shard(spec: ShardSpec, shard_dir: str | Path, *, progress: bool = False) -> Candidate:
    """Run (or resume, or just read back) one shard; returns its candidate and writes ``candidate.json``."""
    d = Path(shard_dir)
    done = d / "candidate.json"
    if done.exists():
        return json.loads(done.read_text())
    result: SearchResult = run_search(spec.cfg, d, progress=progress)
    cfg = spec.cfg
    accuracy = result.val_accuracy
    if cfg.fine_tune_epochs:
        tcfg = TrainConfig(dataset=cfg.dataset, data_root=cfg.data_root, data_limit=cfg.data_limit,
                           epochs=cfg.fine_tune_epochs, batch_size=cfg.batch_size, lr=cfg.lr * 0.4, seed=cfg.seed,
                           device=cfg.device, threads=cfg.threads)
        space = get_space(cfg.space, **cfg.space_args)
        trained, _ = train_arch(space, result.arch, result.hparams, tcfg, inherit=d, progress=False)
        accuracy = trained.val_accuracy
    cand: Candidate = {
        "arch": result.arch, "arch_id": result.arch_id, "accuracy": accuracy, "accuracy_kind": accuracy_kind(cfg),
        "predicted_latency_ms": result.extra.get("predicted_latency_ms"),
        "measured_latency_ms": result.extra.get("measured_latency_ms"),
        "target_latency_ms": cfg.target_ms, "shard": spec.key, "seed": cfg.seed, "relaxation": cfg.relaxation,
        "supernet_val_accuracy": result.val_accuracy, "search_seconds": round(result.seconds, 2),
    }
    write_json(done, cand)
    return cand


@dataclass
class SweepResult:
    run_dir: Path
    candidates: list[Candidate]
    pareto: list[Candidate]


def run_sweep(cfg: SearchConfig, targets: list[float | None], seeds: list[int], run_dir: str | Path, *,
              progress: bool = True) -> SweepResult:
    """One search per (target, seed), one after another; writes ``candidates.jsonl`` and ``pareto.json``.

    Finished shards are read back, not recomputed, so a rerun after an interruption completes the run.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    specs = shard_specs(cfg, targets, seeds)
    write_yaml(run / "config.yaml", {**cfg.to_dict(), "targets": targets, "seeds": seeds})
    cands = []
    for i, spec in enumerate(specs):
        if progress:
            print(f"shard {i + 1}/{len(specs)}: {spec.key}", flush=True)
        cands.append(run_shard(spec, run / "shards" / spec.key, progress=progress))
        write_front(run, cands)
    return SweepResult(run, cands, write_front(run, cands))
