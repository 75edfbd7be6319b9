"""hwnas: hardware-aware differentiable neural architecture search.

Python API (the CLI calls the same functions)::

    import hwnas
    result = hwnas.search(space="seed-cnn", dataset="digits", relaxation="gumbel", epochs=8, out="runs/a")
    trained = hwnas.train(result, epochs=10)
    print(trained.test_accuracy)
    manifest = hwnas.export("runs/a", "exports/a", int8=True)   # ONNX + checks + manifest
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import RayConfig, SearchConfig, SweepConfig, TrainConfig
from .errors import HwnasError
from .export import export
from .preflight import check_data
from .run import ArchRecord
from .search.loop import SearchResult, run_search
from .search.retrain import TrainResult, train_arch
from .search.sweep import SweepResult
from .space import SPACES, get_space

__version__ = "0.1.0"


def search(*, out: str | Path | None = None, targets: list[float | None] | None = None,
           seeds: list[int] | None = None, shards_per_target: int = 1, ray: RayConfig | dict[str, Any] | bool = True,
           progress: bool = False, fresh: bool = False, **config: Any) -> SearchResult | SweepResult:
    """Run one search, or a sweep of shards over latency targets, seeds and parts of the space.

    Keyword arguments are ``SearchConfig`` fields (space, dataset, relaxation, latency_table, target_ms, ...).

    Args:
        out: run folder (config.yaml, history.jsonl, checkpoint.safetensors, arch.json); None keeps one search in
            memory (a sweep needs a folder). Rerunning the same search into the same folder resumes; a
            folder holding another run is refused (one-line ``HwnasError``) unless ``fresh``.
        targets, seeds, shards_per_target: run one shard per (target, seed, part) and return the
            ``SweepResult`` (candidates and Pareto front, as written to candidates.jsonl and pareto.json).
        ray: how a sweep's shards run: True (Ray actors on ``$RAY_ADDRESS`` or a local cluster), False (one
            after another in this process), or ``RayConfig`` fields (address, workers_per_shard, ...).
        progress: show progress bars.
        fresh: delete a previous run in ``out`` (only the files a run folder holds) and start over.

    Returns:
        ``SearchResult`` (whose ``to_json()`` is arch.json) or ``SweepResult``.
    """
    cfg = SearchConfig(**config)
    if targets or (seeds and len(seeds) > 1) or shards_per_target > 1:
        if out is None:
            raise HwnasError("a sweep over targets, seeds or parts of the space writes a run folder: pass out=...")
        from .distributed import run_shards

        sweep = SweepConfig(list(targets or [cfg.target_ms]), list(seeds or [cfg.seed]), shards_per_target)
        ray_cfg = ray if isinstance(ray, RayConfig) else (RayConfig(**ray) if isinstance(ray, dict)
                                                         else RayConfig(enabled=bool(ray)))
        return run_shards(cfg, sweep, ray_cfg, out, progress=progress, fresh=fresh)
    check_data(cfg)  # a missing or corrupt data root: one line, before anything is built or written
    return run_search(cfg, out, progress=progress, fresh=fresh)


def train(arch: SearchResult | dict[str, Any], *, inherit: str | Path | None = None, progress: bool = False,
          **config: Any) -> TrainResult:
    """Retrain an arch (a ``SearchResult`` or an arch.json object). Keyword arguments are ``TrainConfig`` fields."""
    obj = arch.to_json() if isinstance(arch, SearchResult) else arch
    rec = ArchRecord.from_json(obj, "the arch passed to hwnas.train")
    return train_arch(rec.build_space(), rec.arch, rec.hparams, TrainConfig(**config), inherit=inherit,
                      progress=progress)[0]


__all__ = ["SPACES", "HwnasError", "RayConfig", "export", "SearchConfig", "SweepConfig", "SearchResult", "SweepResult", "TrainConfig", "TrainResult", "get_space",
           "search", "train"]
