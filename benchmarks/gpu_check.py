"""GPU checks of the Ray shards, for a machine with one GPU and Ray installed (not part of the test suite).

* a shard asking for 1 GPU trains on cuda:0 of the GPU Ray assigned (CUDA_VISIBLE_DEVICES set by Ray);
* two shards asking for 0.5 GPU share it;
* a shard asking for no GPU on a GPU node runs on CPU with the GPUs hidden;
* a data-parallel shard of 2 Ray Train workers sharing the GPU (gloo) keeps identical arch parameters.

    OUT=benchmarks/results python benchmarks/gpu_check.py      # writes gpu_check.json
"""
from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from pathlib import Path

import ray
import torch

from hwnas.config import RayConfig, SearchConfig, SweepConfig
from hwnas.distributed.driver import run_on_ray

CFG = SearchConfig(space="seed-cnn", dataset="digits", data_limit=600, epochs=4, warmup_epochs=1, fine_tune_epochs=1)
CASES = {
    "one_gpu_shard": (RayConfig(gpus_per_shard=1, cpus_per_shard=2), [0]),
    "two_shards_half_gpu": (RayConfig(gpus_per_shard=0.5, cpus_per_shard=2), [0, 1]),
    "cpu_shard_on_gpu_node": (RayConfig(gpus_per_shard=0, cpus_per_shard=2), [0]),
    "dp_two_workers_gloo_shared_gpu": (RayConfig(gpus_per_shard=0.5, cpus_per_shard=2, workers_per_shard=2,
                                                 max_failures=0), [0]),
}


def case(name: str, ray_cfg: RayConfig, seeds: list[int]) -> dict:
    t0, d = time.time(), Path("/tmp/gpucheck") / name
    shutil.rmtree(d, ignore_errors=True)
    try:
        res = run_on_ray(CFG, SweepConfig(seeds=seeds), ray_cfg, d, progress=False)
    except Exception:  # noqa: BLE001 - recorded in the report
        return {"ok": False, "seconds": round(time.time() - t0, 1), "error": traceback.format_exc()[-1500:]}
    rows = []
    for c in res.candidates:
        sd = d / "shards" / c["shard"]
        worker = json.loads((sd / "worker.json").read_text())
        hist = [json.loads(line) for line in (sd / "history.jsonl").read_text().splitlines()]
        rows.append({"shard": c["shard"], "device": c["resources"].get("device"),
                     "gpu_ids": c["resources"].get("gpu_ids"), "placement": c["resources"].get("placement"),
                     "cuda_visible_devices": worker.get("cuda_visible_devices"), "accuracy": c["accuracy"],
                     "epoch_seconds": [r["seconds"] for r in hist], "ranks": hist[-1].get("data_parallel_ranks"),
                     "rank_diff": hist[-1].get("arch_params_max_rank_diff")})
    return {"ok": True, "seconds": round(time.time() - t0, 1), "shards": rows}


def main() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    report = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "ray": ray.__version__}
    ray.init(address="local", num_cpus=8, num_gpus=1, include_dashboard=False, object_store_memory=200 * 2**20)
    for name, (ray_cfg, seeds) in CASES.items():
        report[name] = case(name, ray_cfg, seeds)
        print(name, json.dumps(report[name])[:1500], flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
