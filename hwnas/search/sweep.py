"""Shards and sweeps: one search per latency target (x seed), each scored after a fine-tune step.

``run_shard`` is one complete unit of work (search, derive under the budget, fine-tune from the
supernet's weights, score on the validation split, measure latency); it writes everything into its own
folder and returns its candidate, so that the Ray driver (``hwnas.distributed``) can run shards as
actors while this module runs them one after another in one process.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import RayConfig, SearchConfig, SweepConfig, TrainConfig
from ..errors import ConfigError
from ..run import HISTORY, RunFolder, read_candidate, read_jsonl, sweep_record, write_candidate, write_front
from ..space import get_space
from ._dist import SINGLE, Single
from .loop import SearchResult, run_search
from .pareto import Candidate
from .retrain import train_arch


@dataclass(frozen=True)
class ShardSpec:
    """One shard: a search config (its target, seed and sub-space set) and its folder name under ``shards/``."""

    key: str
    cfg: SearchConfig


def shard_specs(cfg: SearchConfig, sweep: SweepConfig) -> list[ShardSpec]:
    """The cross product targets x seeds x parts of the space, with stable keys like ``t0.04-s0(-p1)``."""
    try:
        parts = get_space(cfg.space, **cfg.space_args).split(sweep.shards_per_target)
    except ValueError as err:
        raise ConfigError(f"--shards-per-target: {err}") from None
    out = []
    for t in sweep.targets:
        for s in sweep.seeds:
            for i, part in enumerate(parts):
                key = (f"t{t:g}-s{s}" if t is not None else f"s{s}") + (f"-p{i}" if len(parts) > 1 else "")
                out.append(ShardSpec(key, cfg.replace(target_ms=t, seed=s, subspace=part or cfg.subspace)))
    return out


def accuracy_kind(cfg: SearchConfig) -> str:
    if cfg.fine_tune_epochs:
        return f"validation accuracy after a {cfg.fine_tune_epochs}-epoch fine-tune from the supernet's weights"
    return "validation accuracy with the supernet's weights (no fine-tune)"


def _history_seconds(d: Path) -> float:
    """Wall-clock already spent on epochs in ``d`` (kept across restarts: a resumed shard's cost includes them)."""
    return sum(float(r.get("seconds") or 0.0) for r in read_jsonl(d / HISTORY))


def run_shard(spec: ShardSpec, shard_dir: str | Path, *, progress: bool = False, dp: Single = SINGLE,
              resources: dict[str, Any] | None = None,
              on_checkpoint: Callable[[], None] | None = None) -> Candidate | None:
    """Run (or resume, or just read back) one shard; returns its candidate and writes ``candidate.json``.

    Idempotent: a finished shard is read back; an interrupted one resumes from its last epoch checkpoint.
    With data parallelism every rank searches; rank 0 then fine-tunes, scores and writes (others return None).
    ``on_checkpoint`` runs after each epoch checkpoint and after ``candidate.json`` (uploads to storage).
    """
    d = Path(shard_dir)
    if (cand := read_candidate(d)) is not None:
        return cand
    t0, before = time.perf_counter(), _history_seconds(d)
    result: SearchResult = run_search(spec.cfg, d, progress=progress, dp=dp, on_checkpoint=on_checkpoint)
    if not dp.is_main:
        return None
    cfg = spec.cfg
    accuracy = result.val_accuracy
    if cfg.fine_tune_epochs:
        tcfg = TrainConfig(dataset=cfg.dataset, data_root=cfg.data_root, data_limit=cfg.data_limit,
                           epochs=cfg.fine_tune_epochs, batch_size=cfg.batch_size, lr=cfg.lr * cfg.fine_tune_lr_factor,
                           seed=cfg.seed, device=cfg.device, threads=cfg.threads, data_seed_stride=cfg.data_seed_stride)
        space = get_space(cfg.space, **cfg.space_args)
        trained, _ = train_arch(space, result.arch, result.hparams, tcfg, inherit=d, progress=False)
        accuracy = trained.val_accuracy
    cand: Candidate = {
        "arch": result.arch, "arch_id": result.arch_id, "accuracy": accuracy, "accuracy_kind": accuracy_kind(cfg),
        "predicted_latency_ms": result.extra.get("predicted_latency_ms"),
        "measured_latency_ms": result.extra.get("measured_latency_ms"),
        "target_latency_ms": cfg.target_ms, "shard": spec.key, "seed": cfg.seed, "relaxation": cfg.relaxation,
        "subspace": cfg.subspace, "supernet_val_accuracy": result.val_accuracy,
        "search_seconds": round(result.seconds, 2), "shard_seconds": round(before + time.perf_counter() - t0, 2),
        "resources": resources or local_resources(cfg),
    }
    write_candidate(d, cand)
    if on_checkpoint is not None:
        on_checkpoint()
    return cand


def local_resources(cfg: SearchConfig) -> dict[str, Any]:
    """What a shard run in this process used (the Ray actor reports what Ray gave it instead)."""
    gpu = cfg.device != "cpu" and torch.cuda.is_available()
    return {"cpus": float(cfg.threads or torch.get_num_threads()), "gpus": 1.0 if gpu else 0.0, "workers": 1,
            "node": socket.gethostname(), "gpu_ids": [], "placement": "in-process"}


@dataclass
class SweepResult:
    run_dir: Path
    candidates: list[Candidate]
    pareto: list[Candidate]


@contextlib.contextmanager
def open_sweep(run_dir: str | Path, cfg: SearchConfig, sweep: SweepConfig, ray: RayConfig, *,
               fresh: bool = False) -> Iterator[list[ShardSpec]]:
    """Hold ``run_dir``'s writer lock, start (or resume) the sweep there and yield its shards.

    The resolved config is written to ``config.yaml`` (what ``--resume`` reads back); a folder holding a
    single search, another sweep or foreign files is refused unless ``fresh`` (``hwnas.run.RunFolder``).
    """
    folder = RunFolder(run_dir)
    with folder.writer("hwnas search (sweep)"):
        folder.prepare("sweep", sweep_record(cfg, sweep, ray), fresh=fresh)
        yield shard_specs(cfg, sweep)


def run_sweep(cfg: SearchConfig, sweep: SweepConfig, run_dir: str | Path, *, progress: bool = True,
              fresh: bool = False) -> SweepResult:
    """All shards one after another in this process; writes ``candidates.jsonl`` and ``pareto.json``.

    Finished shards are read back, not recomputed, so a rerun after an interruption completes the run.
    (``hwnas.distributed`` runs the same shards as Ray actors.)
    """
    run = Path(run_dir)
    with open_sweep(run, cfg, sweep, RayConfig(enabled=False), fresh=fresh) as specs:
        cands = []
        for i, spec in enumerate(specs):
            if progress:
                print(f"shard {i + 1}/{len(specs)}: {spec.key}", flush=True)
            cands.append(run_shard(spec, RunFolder(run).shard(spec.key).path, progress=progress))
            write_front(run, cands)
        return SweepResult(run, cands, write_front(run, cands))
