"""One shard as a Ray actor: constructed from a path and a small dict, so a restart rebuilds it exactly.

``max_restarts`` reruns ``__init__`` after a crash and ``max_task_retries`` replays ``run()``; ``run()`` is
idempotent because ``run_shard`` reads a finished shard back and resumes an unfinished one from its last
epoch checkpoint. Nothing large goes through the object store: the candidate is a small dict.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from .._io import write_json
from ..config import RayConfig, SearchConfig, from_dict
from ..search.pareto import Candidate
from ..search.sweep import ShardSpec, run_shard
from .storage import Storage


def shard_device(cfg: SearchConfig, gpu_ids: list) -> str:
    """``cuda:0`` of what Ray assigned when torch sees it, else CPU (also for a GPU-less actor on a GPU node)."""
    import torch

    if cfg.device == "cpu" or not gpu_ids:
        return "cpu"
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def resources(ray_cfg: RayConfig, gpu_ids: list, device: str, **extra: Any) -> dict[str, Any]:
    """What this shard asked Ray for and where it ran (recorded in candidate.json, costed by the report)."""
    return {**extra, "cpus": ray_cfg.cpus_per_shard, "gpus": ray_cfg.gpus_per_shard, "workers": ray_cfg.workers_per_shard,
            "node": ray.get_runtime_context().get_node_id()[:12], "host": socket.gethostname(),
            "gpu_ids": [str(g) for g in gpu_ids], "device": device, "placement": "ray-actor"}


class ShardActor:
    """Runs one shard (``ShardSpec``) into ``shard_dir`` on whatever Ray placed it."""

    def __init__(self, key: str, cfg: dict[str, Any], shard_dir: str, ray_cfg: dict[str, Any]) -> None:
        self.ray_cfg = from_dict(RayConfig, ray_cfg, "ray config")
        self.gpu_ids = ray.get_gpu_ids()
        if not self.gpu_ids and self.ray_cfg.workers_per_shard == 1:
            # Ray >= 2.48 leaves every GPU visible to an actor that asked for none: hide them ourselves
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        self.spec = ShardSpec(key, from_dict(SearchConfig, cfg, f"shard {key}"))
        self.storage = Storage(self.ray_cfg.storage) if self.ray_cfg.storage else None
        if self.storage is not None:  # a local scratch copy of the shard folder, pulled from the URI
            self.dir = Path(tempfile.mkdtemp(prefix=f"hwnas-{key}-"))
            self.storage.pull(key, self.dir)
        else:
            self.dir = Path(shard_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "worker.json"  # where the shard runs now; attempt counts starts (restarts + 1)
        prev = json.loads(info.read_text()) if info.exists() else {}
        self.attempt = prev.get("attempt", 0) + 1
        write_json(info, {"attempt": self.attempt, "pid": os.getpid(), "host": socket.gethostname(),
                          "node": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(g) for g in self.gpu_ids],
                          "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "started": time.time()})
        self._push()

    def _push(self) -> None:
        if self.storage is not None:
            self.storage.push(self.dir, self.spec.key)

    def run(self) -> Candidate:
        """The shard's candidate (searching, resuming or reading it back as needed)."""
        if self.ray_cfg.workers_per_shard > 1:
            from .train import run_data_parallel

            cand = run_data_parallel(self.spec, self.dir, self.ray_cfg, attempt=self.attempt)
            if self.storage is not None:
                self.storage.pull(self.spec.key, self.dir)  # what rank 0 pushed, for status()
            return cand
        device = shard_device(self.spec.cfg, self.gpu_ids)
        threads = self.spec.cfg.threads or max(1, int(self.ray_cfg.cpus_per_shard))
        spec = ShardSpec(self.spec.key, self.spec.cfg.replace(device=device, threads=threads))
        cand = run_shard(spec, self.dir, resources=resources(self.ray_cfg, self.gpu_ids, device, attempt=self.attempt),
                         on_checkpoint=self._push)
        assert cand is not None
        return cand

    def status(self) -> dict[str, Any]:
        """Progress read from the shard folder (answered while ``run()`` works: the actor has 2 threads)."""
        h = self.dir / "history.jsonl"
        lines = h.read_text().splitlines() if h.exists() else []
        last = json.loads(lines[-1]) if lines else {}
        return {"epoch": len(lines), "done": (self.dir / "candidate.json").exists(),
                "val_accuracy": last.get("derived_val_accuracy"), "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id()[:12], "gpu_ids": [str(g) for g in self.gpu_ids]}
