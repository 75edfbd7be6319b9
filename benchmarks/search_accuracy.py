"""Search + retrain, per relaxation: the derived arch's test accuracy and the search's wall-clock.

Digits always; the real MNIST test split (6,000/2,000/2,000) when ../shared/data/mnist exists.

    python benchmarks/search_accuracy.py [--epochs 6] [--train-epochs 10] [--seeds 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import hwnas
from hwnas.relax import RELAXATIONS

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--train-epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/search_accuracy.json")
    args = ap.parse_args()
    datasets = [("digits", None, None)]
    if (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        datasets.append(("mnist", str(MNIST), 2000))  # search on 2,000 per split; retrain on the full split
    rows = []
    for dataset, root, limit in datasets:
        for relaxation in RELAXATIONS.names():
            for seed in map(int, args.seeds.split(",")):
                t0 = time.perf_counter()
                res = hwnas.search(space="seed-cnn", dataset=dataset, data_root=root, data_limit=limit,
                                   relaxation=relaxation, epochs=args.epochs, warmup_epochs=1, seed=seed,
                                   threads=args.threads, batch_size=64 if dataset == "digits" else 128)
                t_search = time.perf_counter() - t0
                tr = hwnas.train(res, dataset=dataset, data_root=root, epochs=args.train_epochs, seed=seed,
                                 threads=args.threads)
                rows.append({"dataset": dataset, "relaxation": relaxation, "seed": seed, "arch": res.arch,
                             "search_seconds": round(t_search, 1), "supernet_val_accuracy": res.val_accuracy,
                             "test_accuracy": tr.test_accuracy, "train_seconds": tr.seconds})
                r = rows[-1]
                print(f"{dataset:<7} {relaxation:<12} seed {seed}  search {r['search_seconds']:>6.1f} s  "
                      f"test acc {r['test_accuracy']:.4f}  {r['arch']}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"epochs": args.epochs, "train_epochs": args.train_epochs, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
