"""The Ray driver: one actor per unfinished shard, a progress line per shard, the Pareto front merged as
shards finish. Finished shards are read back from their folders, so rerunning (``--resume``) after the
driver died only runs what is left. Once no shard trains any more, the driver times the candidates that
lack a measurement (``search.sweep.measure_candidates``) on its own machine, one at a time."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from tqdm.auto import tqdm

from ..config import RayConfig, SearchConfig, SweepConfig
from ..errors import ConfigError, HwnasError
from ..run import (
    CANDIDATE,
    CANDIDATES,
    CONFIG,
    PARETO,
    RUN_RECORD,
    SHARDS,
    RunFolder,
    check_candidate,
    read_candidate,
    write_front,
)
from ..search.pareto import Candidate
from ..search.sweep import ShardSpec, SweepResult, measure_candidates, open_sweep
from .actor import ShardActor
from .cluster import check_feasible, ray_session
from .storage import Storage

POLL_S = 1.0


@dataclass
class _Running:
    spec: ShardSpec
    actor: Any
    ref: Any  # ObjectRef of run()
    bar: tqdm
    started: float
    seen: bool = False  # status() has answered once: the actor is placed
    status_ref: Any = None


def run_on_ray(cfg: SearchConfig, sweep: SweepConfig, ray_cfg: RayConfig, run_dir: str | Path, *,
               progress: bool = True, fresh: bool = False) -> SweepResult:
    """Run every shard of the sweep as a Ray actor; returns and writes the candidates and the Pareto front.

    Raises:
        ConfigError: the cluster can never host a shard (fails before anything is scheduled), or a shard
            was not placed within ``schedule_timeout_s``.
        HwnasError: a shard failed after its restarts; finished shards are kept, ``--resume`` continues.
    """
    storage = Storage(ray_cfg.storage) if ray_cfg.storage else None  # a bad URI fails before anything runs
    run = Path(run_dir).resolve()
    with open_sweep(run, cfg, sweep, ray_cfg, fresh=fresh) as specs:  # holds the run folder's writer lock
        return _run(specs, run, ray_cfg, storage, progress)


def _run(specs: list[ShardSpec], run: Path, ray_cfg: RayConfig, storage: Storage | None,
         progress: bool) -> SweepResult:
    cands: dict[str, Candidate] = {s.key: c for s in specs if (c := _finished(run, s.key, storage)) is not None}
    todo = [s for s in specs if s.key not in cands]
    if progress and cands:
        print(f"{len(cands)} of {len(specs)} shards already finished in {run}; running the other {len(todo)}")
    failures: dict[str, str] = {}
    if todo:
        with ray_session(ray_cfg) as where:
            if progress:
                print(where, flush=True)
            check_feasible(ray_cfg)
            failures = _drive(todo, run, ray_cfg, cands, progress)
    if storage is not None:  # RUN_DIR gets a copy of every shard folder (report, export) and the URI the front
        for s in specs:
            storage.pull(s.key, RunFolder(run).shard(s.key).path)
    # the measurement phase: every shard has stopped training; candidates are timed here, on the driver's
    # machine, one at a time (only when the table is this host's); measured shards are uploaded again
    push = (lambda key, folder: storage.push(folder, key)) if storage is not None else None
    measure_candidates(run, specs[0].cfg, [cands[s.key] for s in specs if s.key in cands], progress=progress,
                       on_shard=push)
    result = SweepResult(run, [cands[s.key] for s in specs if s.key in cands], write_front(run, list(cands.values())))
    if storage is not None:
        for name in (CONFIG, CANDIDATES, PARETO, RUN_RECORD):
            storage.write_text(name, (run / name).read_text())
    if failures:
        lines = "; ".join(f"{k}: {v}" for k, v in failures.items())
        raise HwnasError(f"{len(failures)} shard(s) failed after their restarts ({lines}). The {len(cands)} finished "
                         f"shard(s) are kept in {run}; fix the cause and run: hwnas search --resume {run}")
    return result


def _finished(run: Path, key: str, storage: Storage | None) -> Candidate | None:
    if storage is None:
        return read_candidate(RunFolder(run).shard(key).path)
    text = storage.read_text(SHARDS, key, CANDIDATE)
    if text is None:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        raise HwnasError(f"{storage.uri}/{SHARDS}/{key}/{CANDIDATE} is not valid JSON; delete it to "
                         "rerun that shard") from None
    return check_candidate(obj, f"{SHARDS}/{key}/{CANDIDATE} at the storage URI")


def _options(ray_cfg: RayConfig) -> dict[str, Any]:
    data_parallel = ray_cfg.workers_per_shard > 1  # then the actor only coordinates a TorchTrainer
    return {"num_cpus": 0 if data_parallel else ray_cfg.cpus_per_shard,
            "num_gpus": 0 if data_parallel else ray_cfg.gpus_per_shard,
            "max_restarts": ray_cfg.max_restarts, "max_task_retries": -1, "max_concurrency": 2}


def _drive(todo: list[ShardSpec], run: Path, ray_cfg: RayConfig, cands: dict[str, Candidate],
           progress: bool) -> dict[str, str]:
    remote = ray.remote(ShardActor).options(**_options(ray_cfg))
    running: list[_Running] = []
    for i, spec in enumerate(todo):
        actor = remote.remote(spec.key, spec.cfg.to_dict(), str(RunFolder(run).shard(spec.key).path), ray_cfg.to_dict())
        bar = tqdm(total=spec.cfg.epochs, desc=f"{spec.key:<14}", unit="epoch", position=i, leave=True,
                   disable=not (progress and sys.stderr.isatty()), dynamic_ncols=True,
                   bar_format="{desc} {bar} {n}/{total} epochs{postfix}")
        bar.set_postfix_str("waiting for resources")
        running.append(_Running(spec, actor, actor.run.remote(), bar, time.monotonic()))
    failures: dict[str, str] = {}
    try:
        while running:
            ready, _ = ray.wait([r.ref for r in running], num_returns=1, timeout=POLL_S)
            for r in list(running):
                if r.ref in ready:
                    running.remove(r)
                    _finish(r, run, cands, failures)
                else:
                    _poll(r, ray_cfg, progress)
    finally:
        for r in running:  # the driver is stopping (error, Ctrl-C): shard folders keep the work done
            ray.kill(r.actor, no_restart=True)
            r.bar.close()
    return failures


def _finish(r: _Running, run: Path, cands: dict[str, Candidate], failures: dict[str, str]) -> None:
    try:
        cand = ray.get(r.ref, timeout=60)
    except (RayActorError, RayTaskError) as err:
        failures[r.spec.key] = str(err).strip().splitlines()[-1][:300]
        r.bar.set_postfix_str("FAILED")
        r.bar.close()
        return
    finally:
        ray.kill(r.actor, no_restart=True)
    cands[r.spec.key] = cand
    write_front(run, list(cands.values()))
    r.bar.n = r.bar.total
    pred = cand.get("predicted_latency_ms")  # shards only predict; the measurement phase follows
    lat = f", predicted {pred:.4f} ms" if pred is not None else ""
    r.bar.set_postfix_str(f"done: acc {cand['accuracy']:.3f}{lat}, {cand['arch_id']}")
    r.bar.close()
    if r.bar.disable:
        print(f"shard {r.spec.key} finished: accuracy {cand['accuracy']:.4f}{lat}", flush=True)


def _poll(r: _Running, ray_cfg: RayConfig, progress: bool) -> None:
    """Refresh the shard's progress line; a shard never placed within the timeout is an error, not a hang."""
    if r.status_ref is None:
        r.status_ref = r.actor.status.remote()
    ready, _ = ray.wait([r.status_ref], timeout=0)
    if ready:
        try:
            info = ray.get(r.status_ref, timeout=10)
            r.seen = True
            epoch = min(info["epoch"], r.bar.total)
            acc = info.get("val_accuracy")
            where = f"node {info['node']}" + (f" gpu {','.join(info['gpu_ids'])}" if info["gpu_ids"] else "")
            line = (f"val acc {acc:.3f}, " if acc is not None else "") + where
            if r.bar.disable and epoch != r.bar.n and progress:  # logs (a Ray job, CI): one line per epoch
                print(f"shard {r.spec.key}: epoch {epoch}/{r.bar.total}, {line}", flush=True)
            r.bar.n = epoch
            r.bar.set_postfix_str(line)
        except (RayActorError, GetTimeoutError):
            r.bar.set_postfix_str("restarting (resumes from its checkpoint)")
        r.status_ref = None
    elif not r.seen and time.monotonic() - r.started > ray_cfg.schedule_timeout_s:
        raise ConfigError(
            f"shard {r.spec.key} was not placed within {ray_cfg.schedule_timeout_s:g} s: it asks for "
            f"{ray_cfg.cpus_per_shard:g} CPU and {ray_cfg.gpus_per_shard:g} GPU per worker, the cluster has "
            f"{ray.available_resources()} free; lower the per-shard resources or raise schedule_timeout_s")
