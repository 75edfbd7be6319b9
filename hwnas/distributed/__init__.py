"""Ray at the edge: shards as actors, data-parallel supernets on Ray Train, the local/remote cluster.

Only this package imports ``ray``. ``run_shards`` is the one entry point: with ``ray.enabled`` off it runs
the same shards one after another in this process (``hwnas.search.sweep.run_sweep``).
"""

from __future__ import annotations

from pathlib import Path

from ..config import RayConfig, SearchConfig, SweepConfig
from ..preflight import preflight
from ..search.sweep import SweepResult, run_sweep


def run_shards(cfg: SearchConfig, sweep: SweepConfig, ray_cfg: RayConfig, run_dir: str | Path, *,
               progress: bool = True, fresh: bool = False) -> SweepResult:
    """Run every shard of ``sweep`` (on Ray unless ``ray_cfg.enabled`` is False) into ``run_dir``; ``fresh``
    deletes a previous run there first (else a different run in ``run_dir`` is refused).

    ``hwnas.preflight`` runs first (data files, the cluster to join, the run folder), so that those errors are
    one line each, before anything is scheduled and before Ray is imported or started. With a ``final:``
    block (``sweep.final``) the sweep ends with final training (``hwnas.search.finalize``)."""
    preflight(cfg, ray_cfg, run_dir)
    if not ray_cfg.enabled:
        result = run_sweep(cfg, sweep, run_dir, progress=progress, fresh=fresh)
    else:
        from .driver import run_on_ray  # imports ray

        result = run_on_ray(cfg, sweep, ray_cfg, run_dir, progress=progress, fresh=fresh)
    if sweep.final is None:
        return result
    # the sweep's final: block: every candidate retrained from scratch with its seeds (``search.finalize``)
    from ..search.finalize import candidates_of, finalize

    runner = None
    if ray_cfg.enabled:
        from .final import ray_runner

        runner = ray_runner(ray_cfg, progress=progress)
    front = finalize(run_dir, sweep.final, progress=progress, runner=runner)
    return SweepResult(result.run_dir, candidates_of(run_dir), front)


__all__ = ["run_shards"]
