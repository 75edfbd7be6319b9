"""A pooled shard worker as a Ray actor: constructed from a small dict, so a restart rebuilds it exactly.

The driver keeps as many workers as the cluster can hold and hands each the next shard when it is free
(``driver.py``). ``max_restarts`` reruns ``__init__`` after a crash and ``max_task_retries`` replays the
``run()`` call in flight; ``run()`` is idempotent because ``run_shard`` reads a finished shard back and
resumes an unfinished one from its last epoch checkpoint. Nothing large goes through the object store:
a shard is a path and a config dict, its candidate a small dict.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import ray

from ..config import RayConfig, SearchConfig, from_dict
from ..run import progress, record_start
from ..search.pareto import Candidate
from ..search.sweep import ShardSpec, run_shard
from .storage import working_folder


def assigned_gpus() -> list[str]:
    """The GPU ids Ray gave this process; with none, hide the node's GPUs (Ray >= 2.48 leaves them visible)."""
    ids = [str(g) for g in ray.get_gpu_ids()]
    if not ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return ids


def worker_config(cfg: SearchConfig, ray_cfg: RayConfig, device: str) -> SearchConfig:
    """The shard's config as one worker runs it: its device, and one torch thread per CPU it asked for."""
    return cfg.replace(device=device, threads=cfg.threads or max(1, int(ray_cfg.cpus_per_shard)))


def resources(ray_cfg: RayConfig, gpu_ids: list[str], device: str, **extra: Any) -> dict[str, Any]:
    """What this shard asked Ray for and where it ran (recorded in candidate.json, costed by the report)."""
    return {**extra, "cpus": ray_cfg.cpus_per_shard, "gpus": ray_cfg.gpus_per_shard, "workers": ray_cfg.workers_per_shard,
            "node": ray.get_runtime_context().get_node_id()[:12], "host": socket.gethostname(),
            "gpu_ids": gpu_ids, "device": device, "placement": "ray-actor"}


class ShardWorker:
    """A pooled shard worker: runs shards (``ShardSpec``) one after another into their folders (or a storage
    URI) on whatever Ray placed it, so imports, data and a CUDA context are loaded once per worker."""

    def __init__(self, ray_cfg: dict[str, Any]) -> None:
        self.ray_cfg = from_dict(RayConfig, ray_cfg, "ray config")
        self.gpu_ids = assigned_gpus()
        self.node = ray.get_runtime_context().get_node_id()
        self.dir: Path | None = None  # the folder of the shard being run (None: idle)
        self.shards = 0  # shards this process has started (1 after a restart mid-shard: a fresh process)

    def ready(self) -> dict[str, Any]:
        """Answers once the worker is placed: where it runs."""
        return {"pid": os.getpid(), "node": self.node[:12], "gpu_ids": self.gpu_ids}

    def run(self, key: str, cfg: dict[str, Any], shard_dir: str) -> Candidate:
        """The shard's candidate (searching, resuming or reading it back as needed); replayed by Ray after
        a restart of this worker, when it resumes from the shard's last epoch checkpoint."""
        spec = ShardSpec(key, from_dict(SearchConfig, cfg, f"shard {key}"))
        self.dir, push = working_folder(key, Path(shard_dir), self.ray_cfg.storage)
        self.shards += 1
        attempt = record_start(self.dir, "attempt", pid=os.getpid(), host=socket.gethostname(), node=self.node,
                               gpu_ids=self.gpu_ids, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                               started=time.time(), worker_shard=self.shards)
        if push is not None:
            push()
        try:
            if self.ray_cfg.workers_per_shard > 1:
                from .train import run_data_parallel

                return run_data_parallel(spec, self.dir, self.ray_cfg, attempt=attempt)
            device = "cuda:0" if self.gpu_ids and spec.cfg.device != "cpu" and _cuda() else "cpu"
            spec = ShardSpec(key, worker_config(spec.cfg, self.ray_cfg, device))
            cand = run_shard(spec, self.dir, resources=resources(self.ray_cfg, self.gpu_ids, device, attempt=attempt),
                             on_checkpoint=push)
            assert cand is not None
            return cand
        finally:
            self.dir = None

    def status(self) -> dict[str, Any]:
        """Progress read from the running shard's folder (answered while ``run()`` works: 2 threads)."""
        d = self.dir
        epochs, done, last = progress(d) if d is not None else (0, False, {})
        return {"epoch": epochs, "done": done, "val_accuracy": last.get("derived_val_accuracy"),
                "pid": os.getpid(), "node": self.node[:12], "gpu_ids": self.gpu_ids}


def _cuda() -> bool:
    """Whether torch sees the GPU Ray assigned (a fake GPU in tests, or a driver problem, means CPU)."""
    import torch

    return torch.cuda.is_available()
