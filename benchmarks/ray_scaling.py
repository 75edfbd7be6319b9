"""The same N shards one after another, in plain parallel processes, and on Ray, side by side.

Each round runs, on identical shards (seed-cnn on digits without a latency budget, so that no table probe
or measurement phase enters the walls; 1 torch thread each), alternating and each in a fresh process:

* ``sequential``: the in-process sweep (``--no-ray``), the shards one after another;
* ``processes``: the shards split over ``--cpus`` plain processes (no Ray): what this machine's cores give
  when nothing but the shards runs, i.e. the ceiling any scheduler can reach here;
* ``ray``: the Ray sweep of this checkout (a fresh local cluster of ``--cpus`` CPUs, one CPU per shard);
* ``ray-joined``: the same sweep joining a cluster that runs already, the product path: ``hwnas cluster up``
  once before the rounds (its state file in a temporary folder, ``HWNAS_CLUSTER_STATE``), the sweep with no
  address joins it, ``hwnas cluster down`` after the rounds: no cluster start or shutdown in the wall;
* ``ray-baseline`` (with ``--baseline DIR``): the Ray sweep of another checkout of hwnas, e.g. the commit
  before the worker pool (``git worktree add /tmp/hwnas-base <commit>``).

Figures, medians over rounds: speed-up = sequential wall / wall; parallel efficiency = speed-up /
min(N, CPUs); fixed overhead = wall - (sum of the shards' own seconds) / min(N, CPUs), what is left once
perfectly parallel shard work is subtracted (cluster start, worker start, polling, shutdown). Walls are
taken inside each process around the sweep call (imports excluded: the same for every variant).

    python benchmarks/ray_scaling.py [--shards 4] [--epochs 8] [--data-limit 600] [--rounds 2] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("sequential", "processes", "ray", "ray-joined", "ray-baseline")


def configs(args: argparse.Namespace, seeds: list[int]):
    from hwnas.config import SearchConfig, SweepConfig

    # no latency budget: no table probe and no measurement phase, so the walls compare scheduling alone
    cfg = SearchConfig(space="seed-cnn", dataset="digits", data_limit=args.data_limit, epochs=args.epochs,
                       warmup_epochs=1, fine_tune_epochs=1, threads=1)
    return cfg, SweepConfig(seeds=seeds)


def child(args: argparse.Namespace) -> None:
    """One variant's sweep in this process; prints a JSON line with its wall and per-shard seconds."""
    from hwnas.config import RayConfig
    from hwnas.distributed import run_shards

    seeds = [int(s) for s in args.seeds.split(",")]
    cfg, sweep = configs(args, seeds)
    # no address: ``ray`` starts a private cluster (no state file), ``ray-joined`` joins ``hwnas cluster up``'s
    ray_cfg = RayConfig(enabled=False) if args.child in ("sequential", "processes") else \
        RayConfig(num_cpus=args.cpus, cpus_per_shard=1)
    if args.child == "ray-joined":
        from hwnas.distributed.local_head import live_head

        if live_head() is None:
            raise SystemExit("ray-joined: the hwnas cluster is not running (hwnas cluster up failed?)")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = run_shards(cfg, sweep, ray_cfg, d, progress=False)
        wall = time.perf_counter() - t0
        workers = [json.loads(p.read_text()) for p in Path(d).glob("shards/*/worker.json")]
    print(json.dumps({"wall": wall, "shard_seconds": [c["shard_seconds"] for c in res.candidates],
                      "arch_ids": sorted(c["arch_id"] for c in res.candidates),
                      "worker_pids": len({w["pid"] for w in workers}), "hwnas": __import__("hwnas").__file__}))


def launch(variant: str, args: argparse.Namespace, seeds: list[int], repo: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--seeds", ",".join(map(str, seeds)),
           "--epochs", str(args.epochs), "--data-limit", str(args.data_limit), "--cpus", str(args.cpus)]
    # only ``ray-joined`` sees the head's state file; the other variants (and a baseline checkout that knows
    # the feature) see none, so they start their own cluster as before
    state = args.state if variant == "ray-joined" else str(Path(args.state).with_name("none.json"))
    env = {**os.environ, "PYTHONPATH": str(repo), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "HWNAS_CLUSTER_STATE": state}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a benchmark process failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    seeds = list(range(args.shards))
    if variant == "processes":  # the shards dealt round-robin to --cpus processes started together
        lanes = [seeds[i::args.cpus] for i in range(min(args.cpus, len(seeds)))]
        t0 = time.perf_counter()
        procs = [launch("processes", args, lane, ROOT) for lane in lanes]
        parts = [result(p) for p in procs]
        # each process's own sweep wall, the longest of them (process start and imports excluded, as elsewhere)
        return {"wall": max(p["wall"] for p in parts), "outer_wall": time.perf_counter() - t0,
                "shard_seconds": [s for p in parts for s in p["shard_seconds"]],
                "arch_ids": sorted(a for p in parts for a in p["arch_ids"]), "worker_pids": len(parts)}
    repo = Path(args.baseline) if variant == "ray-baseline" else ROOT
    return result(launch(variant, args, seeds, repo))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--data-limit", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--baseline", help="another hwnas checkout whose Ray sweep runs side by side")
    ap.add_argument("--out", default="benchmarks/results/ray_scaling.json")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--seeds", help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    variants = [v for v in VARIANTS if v != "ray-baseline" or args.baseline]
    lanes = min(args.shards, args.cpus)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-") as d, head(args.cpus, Path(d) / "cluster.json") as (
            args.address, args.state):
        rounds(args, variants, lanes, rows)
    summarise(args, variants, lanes, rows)


@contextlib.contextmanager
def head(cpus: int, state: Path):
    """The hwnas cluster (``hwnas cluster up``, the product path) for ``ray-joined``, recorded in ``state``;
    yields its address and the state file; ``hwnas cluster down`` at the end."""
    env = {**os.environ, "HWNAS_CLUSTER_STATE": str(state), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)

    def hwnas(*words: str) -> None:
        subprocess.run([sys.executable, "-m", "hwnas.cli", "cluster", *words], check=True, env=env, cwd=ROOT,
                       stdout=subprocess.DEVNULL)

    hwnas("up", f"--num-cpus={cpus}", "--num-gpus=0")
    try:
        yield json.loads(state.read_text())["address"], str(state)
    finally:
        hwnas("down")


def rounds(args: argparse.Namespace, variants: list[str], lanes: int, rows: list[dict]) -> None:
    for r in range(args.rounds):
        got = {v: run_variant(v, args) for v in variants}
        seq = got["sequential"]["wall"]
        for v, g in got.items():
            row = {"round": r, "variant": v, "wall_s": round(g["wall"], 2), "speedup": seq / g["wall"],
                   "efficiency": seq / g["wall"] / lanes, "shard_seconds_sum": round(sum(g["shard_seconds"]), 2),
                   "overhead_s": g["wall"] - sum(g["shard_seconds"]) / lanes, "workers": g["worker_pids"],
                   "same_archs": g["arch_ids"] == got["sequential"]["arch_ids"]}
            rows.append(row)
            print(f"round {r} {v:<13} wall {row['wall_s']:6.1f} s  speed-up {row['speedup']:.2f}x  efficiency "
                  f"{row['efficiency']:.0%}  overhead {row['overhead_s']:5.1f} s  shard seconds "
                  f"{row['shard_seconds_sum']:.0f}  same archs {row['same_archs']}", flush=True)


def summarise(args: argparse.Namespace, variants: list[str], lanes: int, rows: list[dict]) -> None:
    med = {v: {k: statistics.median(x[k] for x in rows if x["variant"] == v)
               for k in ("wall_s", "speedup", "efficiency", "overhead_s", "shard_seconds_sum")} for v in variants}
    for v, m in med.items():
        print(f"median {v:<13} " + ", ".join(f"{k} {val:.3g}" for k, val in m.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "lanes": lanes, "rounds": rows, "median": med}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
