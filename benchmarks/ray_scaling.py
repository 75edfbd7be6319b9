"""The same N shards one after another in one process, and as Ray actors on this machine, side by side.

Each round runs the sequential sweep (``--no-ray``) and the Ray sweep (a fresh local cluster of
``--cpus`` CPUs, one CPU per shard) on identical shards (1 torch thread each), alternating, and the
figures are medians over rounds:

* speed-up = sequential wall / Ray wall; parallel efficiency = speed-up / min(N, CPUs)
* Ray's fixed overhead = Ray wall - (sum of the shards' own seconds) / min(N, CPUs), i.e. what is left
  once perfectly parallel shard work is subtracted (cluster start, actor start, polling, shutdown)
* cluster start and the first actor's start latency, measured inside the Ray run.

    python benchmarks/ray_scaling.py [--shards 4] [--epochs 4] [--data-limit 600] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from hwnas.config import RayConfig, SearchConfig, SweepConfig
from hwnas.distributed import run_shards


def one(cfg: SearchConfig, sweep: SweepConfig, ray_cfg: RayConfig) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = run_shards(cfg, sweep, ray_cfg, d, progress=False)
        wall = time.perf_counter() - t0
        starts = []
        for c in res.candidates:
            w = Path(d) / "shards" / c["shard"] / "worker.json"
            if w.exists():
                starts.append(json.loads(w.read_text())["started"])
        return {"wall": wall, "shard_seconds": [c["shard_seconds"] for c in res.candidates],
                "first_actor_start": (min(starts) - (time.time() - (time.perf_counter() - t0))) if starts else None,
                "arch_ids": sorted(c["arch_id"] for c in res.candidates)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--data-limit", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="benchmarks/results/ray_scaling.json")
    args = ap.parse_args()
    cfg = SearchConfig(space="seed-cnn", dataset="digits", data_limit=args.data_limit, epochs=args.epochs,
                       warmup_epochs=1, fine_tune_epochs=1, threads=1, target_ms=0.08)
    sweep = SweepConfig(targets=[0.08], seeds=list(range(args.shards)))
    lanes = min(args.shards, args.cpus)
    rounds = []
    for r in range(args.rounds):
        seq = one(cfg, sweep, RayConfig(enabled=False))
        ray_run = one(cfg, sweep, RayConfig(num_cpus=args.cpus, cpus_per_shard=1))
        row = {"round": r, "sequential_s": round(seq["wall"], 2), "ray_s": round(ray_run["wall"], 2),
               "speedup": seq["wall"] / ray_run["wall"],
               "ray_shard_seconds_sum": round(sum(ray_run["shard_seconds"]), 2),
               "ray_overhead_s": ray_run["wall"] - sum(ray_run["shard_seconds"]) / lanes,
               "first_actor_start_s": ray_run["first_actor_start"],
               "same_archs": seq["arch_ids"] == ray_run["arch_ids"]}
        row["efficiency"] = row["speedup"] / lanes
        rounds.append(row)
        print(f"round {r}: sequential {row['sequential_s']:.1f} s, Ray {row['ray_s']:.1f} s, speed-up "
              f"{row['speedup']:.2f}x, efficiency {row['efficiency']:.0%}, overhead {row['ray_overhead_s']:.1f} s, "
              f"first actor after {row['first_actor_start_s']:.1f} s, same archs {row['same_archs']}", flush=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in
           ("sequential_s", "ray_s", "speedup", "efficiency", "ray_overhead_s", "first_actor_start_s")}
    print("median: " + ", ".join(f"{k} {v:.3g}" for k, v in med.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "lanes": lanes, "rounds": rounds, "median": med}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
