"""The Ray driver: unfinished shards queued on a pool of workers sized to the cluster (``pool.py``), a
sweep line and a line per running shard, the Pareto front merged as shards finish. Finished shards are
read back from their folders, so rerunning (``--resume``) after the driver died only runs what is left.
Once no shard trains any more, the driver times the candidates that lack a measurement
(``search.sweep.measure_candidates``) on its own machine, one at a time."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import RayConfig, SearchConfig, SweepConfig
from ..errors import HwnasError
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
from .cluster import check_feasible, ray_session
from .pool import Events, ShardPool
from .storage import Storage


def run_on_ray(cfg: SearchConfig, sweep: SweepConfig, ray_cfg: RayConfig, run_dir: str | Path, *,
               progress: bool = True, fresh: bool = False) -> SweepResult:
    """Run every shard of the sweep as a Ray actor; returns and writes the candidates and the Pareto front.

    Raises:
        ConfigError: the cluster can never host a shard (fails before anything is scheduled), or the
            sweep stopped making progress for ``schedule_timeout_s`` (see ``pool.py``).
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


def _drive(todo: list[ShardSpec], run: Path, ray_cfg: RayConfig, cands: dict[str, Candidate],
           progress: bool) -> dict[str, str]:
    """Run ``todo`` on a worker pool (``pool.ShardPool``); returns the failures (shard key -> last line)."""

    def on_done(spec: ShardSpec, cand: Candidate, seconds: float) -> str:
        cands[spec.key] = cand
        write_front(run, list(cands.values()))
        pred = cand.get("predicted_latency_ms")  # shards only predict; the measurement phase follows
        lat = f", predicted {pred:.4f} ms" if pred is not None else ""
        return f"done in {seconds:.0f} s: acc {cand['accuracy']:.3f}{lat}, {cand['arch_id']}"

    events = Events(on_done)
    ShardPool(todo, lambda key: str(RunFolder(run).shard(key).path), ray_cfg, events, progress).run()
    return events.failures
