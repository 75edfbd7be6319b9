"""One shard's supernet trained data-parallel across Ray Train workers (``TorchTrainer``).

Every worker runs ``run_shard`` with a ``DataParallel`` context over the process group Ray Train set up
(gloo on CPU, nccl on GPU; gloo when ranks share a GPU, which nccl refuses): the same search, each rank
on its slice of every batch, gradients averaged, so the architecture parameters are identical on all ranks. Rank 0 writes the per-epoch checkpoint into
the shard folder; when a worker dies Ray Train restarts the group (``max_failures``) and the search
resumes from that checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from ..config import RayConfig, SearchConfig, from_dict
from ..errors import HwnasError
from ..run import RAY_TRAIN, read_candidate, record_start
from ..search._dist import DataParallel
from ..search.pareto import Candidate
from ..search.sweep import ShardSpec, run_shard
from .actor import assigned_gpus, resources, worker_config
from .storage import Storage, working_folder


def _worker(config: dict[str, Any]) -> None:
    """The training function of each Ray Train worker."""
    ray_cfg = from_dict(RayConfig, config["ray"], "ray config")
    gpu_ids = assigned_gpus()
    device = ray.train.torch.get_device()
    dev = f"cuda:{device.index or 0}" if device.type == "cuda" else "cpu"
    cfg = worker_config(from_dict(SearchConfig, config["cfg"], "shard config"), ray_cfg, dev)
    dp = DataParallel()
    key = config["key"]
    # every rank resumes from the shard folder (or pulls it from the URI); only rank 0 writes and uploads
    shard_dir, push = working_folder(key, Path(config["dir"]), ray_cfg.storage, tag=f"-r{dp.rank}")
    if dp.rank == 0:  # train_group_starts > 1: Ray Train restarted the group after a failure
        record_start(shard_dir, "train_group_starts", ranks=dp.world)
    res = {**resources(ray_cfg, gpu_ids, dev, attempt=config["attempt"]), "placement": "ray-train"}
    run_shard(ShardSpec(key, cfg), shard_dir, dp=dp, resources=res, on_checkpoint=push if dp.rank == 0 else None)
    ray.train.report({"rank": dp.rank, "done": 1})  # a barrier: ranks end together


def run_data_parallel(spec: ShardSpec, shard_dir: Path, ray_cfg: RayConfig, *, attempt: int = 1) -> Candidate:
    """Run ``spec`` across ``ray_cfg.workers_per_shard`` Ray Train workers; returns rank 0's candidate."""
    if (cand := read_candidate(shard_dir)) is not None:
        return cand
    if spec.cfg.batch_size < ray_cfg.workers_per_shard:
        raise HwnasError(f"batch_size {spec.cfg.batch_size} is split across {ray_cfg.workers_per_shard} workers: "
                         "raise --batch-size or lower --workers-per-shard")
    use_gpu = ray_cfg.gpus_per_shard > 0
    # nccl needs a GPU of its own per rank; ranks sharing one (gpus_per_shard < 1) all-reduce with gloo
    backend = "nccl" if ray_cfg.gpus_per_shard >= 1 else "gloo"
    per_worker = {"CPU": ray_cfg.cpus_per_shard, **({"GPU": ray_cfg.gpus_per_shard} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"key": spec.key, "cfg": spec.cfg.to_dict(), "dir": str(shard_dir), "ray": ray_cfg.to_dict(),
                           "attempt": attempt},
        scaling_config=ScalingConfig(num_workers=ray_cfg.workers_per_shard, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=f"hwnas-{spec.key}",
                             storage_path=ray_cfg.storage or str(Path(shard_dir).resolve() / RAY_TRAIN),
                             failure_config=FailureConfig(max_failures=ray_cfg.max_failures)),
        torch_config=TorchConfig(backend=backend),
    )
    trainer.fit()
    if ray_cfg.storage:
        Storage(ray_cfg.storage).pull(spec.key, Path(shard_dir))
    cand = read_candidate(shard_dir)
    if cand is None:
        raise HwnasError(f"shard {spec.key}: Ray Train finished without a candidate.json in {shard_dir}")
    return cand
