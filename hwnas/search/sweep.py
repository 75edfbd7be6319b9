"""Shards and sweeps: one search per latency target (x seed), each scored after a fine-tune step.

``run_shard`` is one complete unit of work (search, derive the k most probable archs under the budget,
fine-tune each from the supernet's weights and keep the best on the validation split (``verify``), predict
latency); it writes everything into its own
folder and returns its candidate, so that the Ray driver (``hwnas.distributed``) can run shards as
actors while this module runs them one after another in one process.

Shards never time their arch (another shard may be training on the same node). After every shard has
finished, the sweep's measurement phase (``measure_candidates``) times each candidate end to end, one at a
time through ``hwnas.latency.quiet``, when the latency table is this host's; with another device's table
the candidates keep ``latency_source: "predicted"`` and no ``measured_latency_ms``.
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

from ..config import RayConfig, SearchConfig, SweepConfig
from ..errors import ConfigError
from ..run import HISTORY, RunFolder, read_candidate, read_jsonl, sweep_record, write_candidate, write_front
from ..space import get_space
from ._dist import SINGLE, Single
from .hardware import table_path
from .loop import SearchResult, run_search
from .pareto import Candidate
from .targets import describe_targets, load_targets, with_primary
from .verify import summary, verify


@dataclass(frozen=True)
class ShardSpec:
    """One shard: a search config (its target, seed and sub-space set) and its folder name under ``shards/``."""

    key: str
    cfg: SearchConfig


def shard_specs(cfg: SearchConfig, sweep: SweepConfig) -> list[ShardSpec]:
    """The cross product targets x seeds x parts of the space, with stable keys like ``t0.04-s0(-p1)``.

    ``sweep.targets`` are budgets of the primary latency target; with several (``--target``) the others keep
    their one budget in every shard.
    """
    try:
        parts = get_space(cfg.space, **cfg.space_args).split(sweep.shards_per_target)
    except ValueError as err:
        raise ConfigError(f"--shards-per-target: {err}") from None
    out = []
    for t in sweep.targets:
        for s in sweep.seeds:
            for i, part in enumerate(parts):
                key = (f"t{t:g}-s{s}" if t is not None else f"s{s}") + (f"-p{i}" if len(parts) > 1 else "")
                shard = with_primary(cfg, budget_ms=t) if t != cfg.target_ms else cfg
                out.append(ShardSpec(key, shard.replace(seed=s, subspace=part or cfg.subspace)))
    return out


def accuracy_kind(cfg: SearchConfig) -> str:
    if cfg.fine_tune_epochs:
        best = f", the best of the {cfg.verify_k} most probable archs" if cfg.verify_k > 1 else ""
        return f"validation accuracy after a {cfg.fine_tune_epochs}-epoch fine-tune from the supernet's weights{best}"
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
    # no end-to-end timing here: other shards may be training on this node (``measure_candidates`` does it)
    result: SearchResult = run_search(spec.cfg, d, progress=progress, dp=dp, on_checkpoint=on_checkpoint,
                                      measure=False)
    if not dp.is_main:
        return None
    cfg = spec.cfg
    arch, arch_id, accuracy = result.arch, result.arch_id, result.val_accuracy
    predicted, verified = result.extra.get("predicted_latency_ms"), {}
    if cfg.fine_tune_epochs:  # derive k, fine-tune each, keep the best on validation (``verify``)
        best, records = verify(cfg, d, result.hparams)
        arch, arch_id, accuracy, verified = best.arch, best.arch_id, best.val_accuracy, summary(best, records)
        predicted = best.predicted_latency_ms if best.predicted_latency_ms is not None else predicted
    cand: Candidate = {
        "arch": arch, "arch_id": arch_id, "accuracy": accuracy, "accuracy_kind": accuracy_kind(cfg),
        "predicted_latency_ms": predicted,
        "measured_latency_ms": result.extra.get("measured_latency_ms"),
        "latency_source": result.extra.get("latency_source"), "latency_device": result.extra.get("latency_device"),
        "target_latency_ms": cfg.target_ms, "shard": spec.key, "seed": cfg.seed, "relaxation": cfg.relaxation,
        "subspace": cfg.subspace, "supernet_val_accuracy": result.val_accuracy,
        "search_seconds": round(result.seconds, 2), "shard_seconds": round(before + time.perf_counter() - t0, 2),
        "resources": resources or local_resources(cfg), **verified,
    }
    if predicted is not None:  # every target's budget and prediction for the shard's arch (primary first)
        cand["latency_targets"] = describe_targets(load_targets(cfg, get_space(cfg.space, **cfg.space_args)), arch)
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
        table = _sweep_table(cfg, sweep)
        yield shard_specs(with_primary(cfg, table=table) if table else cfg, sweep)


def _sweep_table(cfg: SearchConfig, sweep: SweepConfig) -> str | None:
    """The latency table every shard uses, found (and probed) once here by the driver, so that shards never
    probe while others train; None when no shard is hardware-aware."""
    target = next((t for t in sweep.targets if t is not None), None)
    shard = cfg if cfg.hardware_aware or target is None else with_primary(cfg, budget_ms=target)
    return table_path(shard, get_space(cfg.space, **cfg.space_args))


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
        measure_candidates(run, specs[0].cfg, cands, progress=progress)
        return SweepResult(run, cands, write_front(run, cands))


def measure_candidates(run: str | Path, cfg: SearchConfig, cands: list[Candidate], *, progress: bool = True,
                       on_shard: Callable[[str, Path], None] | None = None) -> list[Candidate]:
    """The sweep's measurement phase: time every finished candidate that lacks a measurement, in place.

    Runs after all shards have finished training (in the driver's process, nothing else of the sweep
    running), one candidate at a time through ``latency.quiet.measure_quietly`` (one core, probe before and
    after, remeasured or marked ``noisy``), and only when the latency table is this host's; an arch that
    several shards found is timed once. Each measured candidate's ``candidate.json`` and ``arch.json`` are
    rewritten at once (an interrupted phase resumes with the rest) and ``candidates.jsonl``/``pareto.json``
    after each. A progress line per candidate when ``progress``.

    Args:
        run: the sweep folder (shards under ``shards/<key>/``).
        cfg: a shard's search config (the sweep's resolved latency table).
        cands: the finished candidates; updated in place.
        on_shard: called with (shard key, shard folder) after a shard's files were rewritten (uploads).

    Returns:
        ``cands``.
    """
    from ..latency.quiet import measure_for, on_this_host, provenance
    from ..run import update_arch
    from .hardware import load_latency_model

    space = get_space(cfg.space, **cfg.space_args)
    model, _ = load_latency_model(cfg, space)
    if model is None or not cands:
        return cands
    if not on_this_host(model.table):
        if progress:
            print(f"latency: predicted only (table of device {model.table.device.get('name')!r}, not this host); "
                  "nothing measured", flush=True)
        return cands
    todo = [c for c in cands if c.get("measurement") is None]
    done: dict[str, Any] = {}
    for n, c in enumerate(todo, 1):
        if c["arch_id"] not in done:
            timed = model.space  # the table's geometry (space.latency_space(): proxyless trains small, runs at 224)
            done[c["arch_id"]] = measure_for(model, timed.build(c["arch"]), timed.input_shape)
        q = done[c["arch_id"]]
        c.update(provenance(model.table, q))
        folder = RunFolder(run).shard(str(c["shard"])).path
        write_candidate(folder, c)
        fields = ("latency_source", "latency_device", "latency_precision", "measured_latency_ms", "measurement")
        update_arch(folder, {k: c.get(k) for k in fields})
        if on_shard is not None:
            on_shard(str(c["shard"]), folder)
        write_front(run, cands)
        if progress:
            pred = c.get("predicted_latency_ms")
            note = f", NOISY (spread {q.spread:.1%}, probe x{q.probe_ratio:.2f})" if q.noisy else ""
            print(f"measured {n}/{len(todo)}: {c['shard']} {c['arch_id']} {q.median_ms:.4f} ms"
                  + (f" (predicted {pred:.4f})" if pred is not None else "") + note, flush=True)
    return cands
