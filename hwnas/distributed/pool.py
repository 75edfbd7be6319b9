"""A pool of shard workers that queues a sweep larger than the cluster.

The pool holds as many workers (``actor.ShardWorker``) as the cluster can host at once (``capacity``);
shards wait in the driver's queue, and each worker takes the next one when it is placed or free, so a
sweep of 24 shards on 8 GPUs runs in three waves without an error and each worker loads its imports, data
and CUDA context once. Waiting is normal; the pool fails only when waiting cannot end:

* a shard's demand exceeds every node (``cluster.check_feasible``, before anything is scheduled);
* the sweep stopped making progress: for ``schedule_timeout_s`` no worker was placed, no shard started,
  advanced an epoch or finished, nothing is running, and the cluster has free resources for a worker
  that Ray still does not place (with ``autoscaling``: no worker placed at all within the timeout, i.e.
  the autoscaler never added a node that fits).

A worker that dies beyond its restarts fails its shard only; a new worker takes its place for the rest.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from tqdm.auto import tqdm

from ..config import RayConfig
from ..errors import ConfigError
from ..search.sweep import ShardSpec
from .actor import ShardWorker

POLL_S = 1.0  # the driver wakes at least this often (a result returns at once; status is asked this often)


def demand(cfg: RayConfig) -> dict[str, float]:
    """Resources one pool worker holds: the shard's, or none when it only coordinates a data-parallel
    ``TorchTrainer`` (whose workers then ask for ``cpus_per_shard``/``gpus_per_shard`` each)."""
    if cfg.workers_per_shard > 1:
        return {}
    out = {"CPU": cfg.cpus_per_shard}
    if cfg.gpus_per_shard:
        out["GPU"] = cfg.gpus_per_shard
    return out


def capacity(cfg: RayConfig, nodes: list[dict[str, float]]) -> int:
    """How many shards the cluster's alive ``nodes`` (their total resources) can run at once."""
    per_worker = {"CPU": cfg.cpus_per_shard, **({"GPU": cfg.gpus_per_shard} if cfg.gpus_per_shard else {})}
    slots = sum(min(math.floor(n.get(k, 0.0) / v + 1e-9) for k, v in per_worker.items()) for n in nodes)
    return slots // cfg.workers_per_shard


def fits(need: dict[str, float], free: dict[str, float]) -> bool:
    return all(free.get(k, 0.0) >= v for k, v in need.items())


@dataclass
class Worker:
    """One pooled actor and the shard it runs (None: idle or not placed yet)."""

    actor: Any
    ready_ref: Any
    placed: bool = False
    where: str = ""
    spec: ShardSpec | None = None
    ref: Any = None  # ObjectRef of run()
    status_ref: Any = None
    bar: Any = None
    epoch: int = 0
    started: float = 0.0


@dataclass
class Events:
    """What the driver does when a shard finishes or fails (``driver.py``)."""

    on_done: Callable[[ShardSpec, dict[str, Any], float], str]  # -> the line shown for it
    failures: dict[str, str] = field(default_factory=dict)


class ShardPool:
    """Runs ``todo`` on a pool of ``ShardWorker`` actors; see the module docstring."""

    def __init__(self, todo: list[ShardSpec], shard_dir: Callable[[str], str], ray_cfg: RayConfig,
                 events: Events, progress: bool) -> None:
        self.queue: deque[ShardSpec] = deque(todo)
        self.total, self.shard_dir, self.cfg, self.events = len(todo), shard_dir, ray_cfg, events
        self.tty = progress and sys.stderr.isatty()
        self.progress = progress
        self.remote = ray.remote(ShardWorker).options(
            **{"num_cpus": demand(ray_cfg).get("CPU", 0), "num_gpus": demand(ray_cfg).get("GPU", 0),
               "max_restarts": ray_cfg.max_restarts, "max_task_retries": -1, "max_concurrency": 2})
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        self.size = len(todo) if ray_cfg.autoscaling else max(1, min(len(todo), capacity(ray_cfg, nodes)))
        self.replacements = len(todo)  # workers that may replace dead ones, at most
        self.workers: list[Worker] = [self._spawn() for _ in range(self.size)]
        self.done = 0
        self.durations: list[float] = []  # seconds of each finished shard (for the ETA)
        self.last_progress = time.monotonic()
        self.ever_placed = False
        self.bar = tqdm(total=len(todo), desc="sweep", unit="shard", position=0, leave=True, disable=not self.tty,
                        dynamic_ncols=True, bar_format="{desc} {bar} {n}/{total} shards [{elapsed}]{postfix}")
        self._line = ""
        self._show()

    def _spawn(self) -> Worker:
        actor = self.remote.remote(self.cfg.to_dict())
        return Worker(actor, actor.ready.remote())

    # ---- the loop ----------------------------------------------------------------------------------------
    def run(self) -> None:
        """Until every shard finished or failed; kills the pool's actors on the way out (shard folders keep
        the work done, so ``--resume`` continues)."""
        try:
            while self.queue or any(w.spec is not None for w in self.workers):
                if not self.workers:  # every worker died beyond its restarts and the replacements ran out
                    for spec in self.queue:
                        self.events.failures[spec.key] = "not run: no shard worker left (all died)"
                    self.queue.clear()
                    break
                self._step()
        finally:
            for w in self.workers:
                ray.kill(w.actor, no_restart=True)
                if w.bar is not None:
                    w.bar.close()
            self.bar.close()

    def _step(self) -> None:
        refs = [w.ref for w in self.workers if w.ref is not None]
        refs += [w.ready_ref for w in self.workers if not w.placed]
        ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_S) if refs else ([], [])
        ready = set(ready)
        for w in list(self.workers):
            if not w.placed and w.ready_ref in ready:
                self._placed(w)
            elif w.ref is not None and w.ref in ready:
                self._finish(w)
            elif w.spec is not None:
                self._poll(w)
            if w in self.workers and w.placed and w.spec is None and self.queue:
                self._start(w)
        self._check_progress()
        self._show()

    def _placed(self, w: Worker) -> None:
        try:
            info = ray.get(w.ready_ref, timeout=30)
        except RayActorError:  # died while starting (beyond its restarts): replace it
            self._replace(w)
            return
        w.placed, self.ever_placed, self.last_progress = True, True, time.monotonic()
        w.where = f"node {info['node']}" + (f" gpu {','.join(info['gpu_ids'])}" if info["gpu_ids"] else "")

    def _start(self, w: Worker) -> None:
        spec = self.queue.popleft()
        w.spec, w.epoch, w.started, self.last_progress = spec, 0, time.monotonic(), time.monotonic()
        w.ref = w.actor.run.remote(spec.key, spec.cfg.to_dict(), self.shard_dir(spec.key))
        if self.tty:
            w.bar = tqdm(total=spec.cfg.epochs, desc=f"{spec.key:<14}", unit="epoch", leave=True, dynamic_ncols=True,
                         position=1 + self.workers.index(w), bar_format="{desc} {bar} {n}/{total} epochs{postfix}")
            w.bar.set_postfix_str(w.where)
        elif self.progress:
            print(f"shard {spec.key}: started on {w.where}", flush=True)

    def _finish(self, w: Worker) -> None:
        spec = w.spec
        assert spec is not None
        try:
            cand = ray.get(w.ref, timeout=60)
        except (RayActorError, RayTaskError) as err:
            self.events.failures[spec.key] = str(err).strip().splitlines()[-1][:300]
            self._end(w, "FAILED")
            if isinstance(err, RayActorError):  # the worker is gone for good: a fresh one takes its place
                self._replace(w)
            return
        self.done += 1
        self.durations.append(time.monotonic() - w.started)
        self._end(w, self.events.on_done(spec, cand, self.durations[-1]))

    def _end(self, w: Worker, line: str) -> None:
        if w.bar is not None:
            w.bar.n = w.bar.total if line != "FAILED" else w.bar.n
            w.bar.set_postfix_str(line)
            w.bar.close()
        elif self.progress:
            print(f"shard {w.spec.key if w.spec else '?'} {line}", flush=True)
        w.spec, w.ref, w.status_ref, w.bar = None, None, None, None
        self.last_progress = time.monotonic()

    def _replace(self, w: Worker) -> None:
        ray.kill(w.actor, no_restart=True)
        self.workers.remove(w)
        if self.replacements > 0 and self.queue:
            self.replacements -= 1
            self.workers.append(self._spawn())

    def _poll(self, w: Worker) -> None:
        """Refresh a running shard's line from its worker (one status call in flight per worker)."""
        if w.status_ref is None:
            w.status_ref = w.actor.status.remote()
            return
        ready, _ = ray.wait([w.status_ref], timeout=0)
        if not ready:
            return
        try:
            info = ray.get(w.status_ref, timeout=10)
        except (RayActorError, GetTimeoutError):
            if w.bar is not None:
                w.bar.set_postfix_str("restarting (resumes from its checkpoint)")
            w.status_ref = None
            return
        w.status_ref = None
        assert w.spec is not None
        epoch = min(info["epoch"], w.spec.cfg.epochs)
        if epoch != w.epoch:
            w.epoch, self.last_progress = epoch, time.monotonic()
            acc = info.get("val_accuracy")
            line = (f"val acc {acc:.3f}, " if acc is not None else "") + w.where
            if w.bar is not None:
                w.bar.n = epoch
                w.bar.set_postfix_str(line)
            elif self.progress:
                print(f"shard {w.spec.key}: epoch {epoch}/{w.spec.cfg.epochs}, {line}", flush=True)

    # ---- waiting vs. stuck -------------------------------------------------------------------------------
    def _check_progress(self) -> None:
        idle_for = time.monotonic() - self.last_progress
        if idle_for <= self.cfg.schedule_timeout_s or any(w.spec is not None for w in self.workers):
            return
        pending = [w for w in self.workers if not w.placed]
        if not pending:
            return
        need = demand(self.cfg)
        if self.cfg.autoscaling and not self.ever_placed:
            raise ConfigError(
                f"no shard worker was placed within {self.cfg.schedule_timeout_s:g} s on this autoscaling cluster: "
                f"each asks for {_fmt(need)} and the autoscaler started no node that fits (the cluster has "
                f"{_fmt(ray.cluster_resources())}); check the autoscaler's node types and limits, or lower "
                "--cpus-per-shard/--gpus-per-shard")
        free = ray.available_resources()
        if fits(need, free):
            raise ConfigError(
                f"the sweep made no progress for {idle_for:.0f} s: {len(pending)} worker(s) asking for {_fmt(need)} "
                f"were not placed although the cluster has {_fmt(free)} free, and no shard is running; check the "
                "Ray cluster's health (`ray status`), then continue with hwnas search --resume RUN_DIR "
                "(finished shards are kept)")

    def _show(self) -> None:
        running = sum(w.spec is not None for w in self.workers)
        waiting = len(self.queue)
        line = f"{self.done} done, {running} running, {waiting} waiting"
        unplaced = sum(not w.placed for w in self.workers)
        if unplaced and not running:
            line += f" ({unplaced} worker(s) waiting for {_fmt(demand(self.cfg))} each)"
        failed = len(self.events.failures)
        if failed:
            line += f", {failed} failed"
        if self.tty:
            self.bar.n = self.done + failed
            eta = self.eta()
            self.bar.set_postfix_str(line + (f", ETA {eta:.0f} s" if eta is not None else ""))
        elif self.progress and line != self._line:
            eta = self.eta()
            note = f", ETA {eta:.0f} s (from the {self.done} finished)" if eta is not None else ""
            print(f"sweep: {line} of {self.total} shards{note}", flush=True)
        self._line = line

    def eta(self) -> float | None:
        """Seconds until the queue is done, from the mean duration of the finished shards: each running
        shard needs the rest of that mean, and the waiting ones go, in order, to the lane free first."""
        if not self.durations or not (self.queue or any(w.spec for w in self.workers)):
            return None
        mean, now = sum(self.durations) / len(self.durations), time.monotonic()
        lanes = [max(0.0, mean - (now - w.started)) if w.spec is not None else 0.0
                 for w in self.workers if w.placed] or [0.0]
        for _ in self.queue:
            i = lanes.index(min(lanes))
            lanes[i] += mean
        return max(lanes)


def _fmt(res: dict[str, float]) -> str:
    keys = [k for k in ("CPU", "GPU") if k in res] or ["CPU"]
    return ", ".join(f"{res.get(k, 0.0):g} {k}" for k in keys)
