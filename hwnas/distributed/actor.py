"""One shard as a Ray actor: constructed from a path and a small dict, so a restart rebuilds it exactly.

``max_restarts`` reruns ``__init__`` after a crash and ``max_task_retries`` replays ``run()``; ``run()`` is
idempotent because ``run_shard`` reads a finished shard back and resumes an unfinished one from its last
epoch checkpoint. Nothing large goes through the object store: the candidate is a small dict.
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


class ShardActor:
    """Runs one shard (``ShardSpec``) into ``shard_dir`` (or a storage URI) on whatever Ray placed it."""

    def __init__(self, key: str, cfg: dict[str, Any], shard_dir: str, ray_cfg: dict[str, Any]) -> None:
        self.ray_cfg = from_dict(RayConfig, ray_cfg, "ray config")
        self.gpu_ids = assigned_gpus()
        self.spec = ShardSpec(key, from_dict(SearchConfig, cfg, f"shard {key}"))
        self.dir, self.push = working_folder(key, Path(shard_dir), self.ray_cfg.storage)
        self.attempt = record_start(self.dir, "attempt", pid=os.getpid(), host=socket.gethostname(),
                                    node=ray.get_runtime_context().get_node_id(), gpu_ids=self.gpu_ids,
                                    cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), started=time.time())
        if self.push is not None:
            self.push()

    def run(self) -> Candidate:
        """The shard's candidate (searching, resuming or reading it back as needed)."""
        if self.ray_cfg.workers_per_shard > 1:
            from .train import run_data_parallel

            return run_data_parallel(self.spec, self.dir, self.ray_cfg, attempt=self.attempt)
        device = "cuda:0" if self.gpu_ids and self.spec.cfg.device != "cpu" and _cuda() else "cpu"
        spec = ShardSpec(self.spec.key, worker_config(self.spec.cfg, self.ray_cfg, device))
        cand = run_shard(spec, self.dir, resources=resources(self.ray_cfg, self.gpu_ids, device, attempt=self.attempt),
                         on_checkpoint=self.push)
        assert cand is not None
        return cand

    def status(self) -> dict[str, Any]:
        """Progress read from the shard folder (answered while ``run()`` works: the actor has 2 threads)."""
        epochs, done, last = progress(self.dir)
        return {"epoch": epochs, "done": done,
                "val_accuracy": last.get("derived_val_accuracy"), "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id()[:12], "gpu_ids": self.gpu_ids}


def _cuda() -> bool:
    """Whether torch sees the GPU Ray assigned (a fake GPU in tests, or a driver problem, means CPU)."""
    import torch

    return torch.cuda.is_available()
