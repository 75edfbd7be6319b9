"""How good is the hardware-aware search? Judged against the seed-cnn ground truth on MNIST.

For 3 latency budgets spread over the space's range, runs hwnas (each relaxation x seeds, budget mode)
and random search given the same wall-clock, and reports against the best arch that meets the budget
in ``benchmarks/data/seed_cnn_mnist_groundtruth.json`` (every arch trained with one recipe):

* test-accuracy regret: best feasible test accuracy - test accuracy of the returned arch (ground truth);
* budget hit rate: share of runs whose returned arch's measured latency (ground truth) meets the budget;
* search cost: wall-clock as a fraction of training all 216 archs (the ground truth's train seconds).

Random search samples archs uniformly among those the latency table predicts within budget, pays each
one's ground-truth training time, and keeps the best by validation accuracy until it has spent the
hwnas run's wall-clock.

    python benchmarks/search_quality.py [--seeds 0,1,2] [--epochs 5] [--data-limit 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import warnings
from pathlib import Path

import hwnas
from hwnas.latency import LatencyModel
from hwnas.relax import RELAXATIONS

HERE = Path(__file__).resolve().parent
GT = HERE / "data" / "seed_cnn_mnist_groundtruth.json"
MNIST = HERE.parents[1] / "shared" / "data" / "mnist"


def random_search(gt: dict, model: LatencyModel, budget: float, seconds: float, seed: int) -> dict:
    rng = random.Random(seed)
    feasible = [r for r in gt.values() if model.predict(r["arch"]) <= budget]
    spent, best = 0.0, None
    while True:
        r = rng.choice(feasible)
        if best is not None and spent + r["train_seconds"] > seconds:
            return best
        spent += r["train_seconds"]
        if best is None or r["val_accuracy"] > best["val_accuracy"]:
            best = r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--data-limit", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--relaxations", default=",".join(RELAXATIONS.names()))
    ap.add_argument("--out", default=str(HERE / "results" / "search_quality.json"))
    args = ap.parse_args()
    data = json.loads(GT.read_text())
    gt = {r["arch_id"]: r for r in data["archs"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LatencyModel.load(data["latency_table"])
    space = model.space
    lat = sorted(r["measured_latency_ms"] for r in gt.values())
    budgets = [round(lat[int(q * (len(lat) - 1))], 4) for q in (0.2, 0.5, 0.8)]
    exhaustive = sum(r["train_seconds"] for r in gt.values())
    rows = []
    for budget in budgets:
        feasible = [r for r in gt.values() if r["measured_latency_ms"] <= budget]
        best = max(r["test_accuracy"] for r in feasible)
        for relaxation in args.relaxations.split(","):
            for seed in map(int, args.seeds.split(",")):
                t0 = time.perf_counter()
                res = hwnas.search(space="seed-cnn", dataset="mnist", data_root=str(MNIST), data_limit=args.data_limit,
                                   relaxation=relaxation, epochs=args.epochs, warmup_epochs=1, seed=seed,
                                   latency_table=data["latency_table"], target_ms=budget, threads=args.threads,
                                   batch_size=64, arch_lr=0.05)
                wall = time.perf_counter() - t0
                got = gt[space.arch_id(res.arch)]
                rnd = random_search(gt, model, budget, wall, seed)
                rows.append({"budget_ms": budget, "relaxation": relaxation, "seed": seed, "seconds": round(wall, 1),
                             "cost_fraction": wall / exhaustive, "best_feasible_test_accuracy": best,
                             "hwnas": {"arch_id": got["arch_id"], "test_accuracy": got["test_accuracy"],
                                       "regret": best - got["test_accuracy"],
                                       "measured_latency_ms": got["measured_latency_ms"],
                                       "meets_budget": got["measured_latency_ms"] <= budget,
                                       "search_measured_latency_ms": res.extra["measured_latency_ms"]},
                             "random": {"arch_id": rnd["arch_id"], "test_accuracy": rnd["test_accuracy"],
                                        "regret": best - rnd["test_accuracy"],
                                        "meets_budget": rnd["measured_latency_ms"] <= budget}})
                r = rows[-1]
                print(f"budget {budget:.4f} {relaxation:<12} seed {seed}: hwnas regret {r['hwnas']['regret']:.4f} "
                      f"({'meets' if r['hwnas']['meets_budget'] else 'MISSES'}), random {r['random']['regret']:.4f}, "
                      f"{wall:.0f} s", flush=True)
    summary = []
    print(f"\n{'budget ms':>9} {'method':<12} {'regret (median)':>15} {'meets budget':>12} {'cost':>8}")
    for budget in budgets:
        for method in [*args.relaxations.split(","), "random"]:
            sel = [r for r in rows if r["budget_ms"] == budget and (method == "random" or r["relaxation"] == method)]
            key = "random" if method == "random" else "hwnas"
            s = {"budget_ms": budget, "method": method,
                 "median_regret": statistics.median(r[key]["regret"] for r in sel),
                 "mean_regret": statistics.mean(r[key]["regret"] for r in sel),
                 "meets_budget": sum(r[key]["meets_budget"] for r in sel) / len(sel),
                 "median_cost_fraction": statistics.median(r["cost_fraction"] for r in sel)}
            summary.append(s)
            print(f"{budget:>9.4f} {method:<12} {s['median_regret']:>15.4f} {s['meets_budget']:>12.0%} "
                  f"{s['median_cost_fraction']:>8.1%}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"budgets_ms": budgets, "exhaustive_train_seconds": exhaustive, "epochs": args.epochs,
                               "data_limit": args.data_limit, "rows": rows, "summary": summary}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
