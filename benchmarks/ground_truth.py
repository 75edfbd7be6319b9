"""A small NAS-Bench for seed-cnn on the real MNIST split: every one of the 216 archs trained with one
fixed recipe, with its validation and test accuracy and (second phase) its measured latency.

Resumable: each finished arch is appended to ``benchmarks/data/seed_cnn_mnist_groundtruth.jsonl``; a
rerun skips archs already there. ``--latency-table`` adds the end-to-end onnxruntime latency of each
arch (measured with the table's protocol) and writes the final JSON next to it.

    python benchmarks/ground_truth.py [--epochs 4] [--threads 1]
    python benchmarks/ground_truth.py --latency-table latency_tables/<device>/seed-cnn.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from hwnas._io import append_jsonl, write_json
from hwnas.config import TrainConfig
from hwnas.data import load_dataset
from hwnas.search.retrain import train_arch
from hwnas.space import get_space

HERE = Path(__file__).resolve().parent
MNIST = HERE.parents[1] / "shared" / "data" / "mnist"
PARTS = HERE / "data" / "seed_cnn_mnist_groundtruth.jsonl"
FINAL = HERE / "data" / "seed_cnn_mnist_groundtruth.json"
RECIPE = {"dataset": "mnist (t10k split 6000/2000/2000)", "optimizer": "SGD nesterov, one-cycle lr 0.05",
          "batch_size": 64, "weight_decay": 5e-4, "seed": 0}


def done_ids() -> dict[str, dict]:
    if not PARTS.exists():
        return {}
    return {r["arch_id"]: r for r in map(json.loads, PARTS.read_text().splitlines())}


def train_all(epochs: int, threads: int) -> None:
    space = get_space("seed-cnn")
    splits = load_dataset("mnist", root=MNIST)
    done = done_ids()
    todo = [a for a in space.enumerate() if space.arch_id(a) not in done]
    cfg = TrainConfig(dataset="mnist", data_root=str(MNIST), epochs=epochs, threads=threads)
    for arch in tqdm(todo, desc="train 216 archs", unit="arch"):
        t0 = time.perf_counter()
        res, _ = train_arch(space, arch, {}, cfg, progress=False, splits=splits)
        append_jsonl(PARTS, {"arch_id": res.arch_id, "arch": arch, "val_accuracy": res.val_accuracy,
                             "test_accuracy": res.test_accuracy, "params": res.params, "epochs": epochs,
                             "train_seconds": round(time.perf_counter() - t0, 2)})


def add_latency(table_path: str, batch: int = 12) -> None:
    """Measure every arch end to end with the table's protocol, round-robin in batches."""
    from hwnas.latency import LatencyModel, measure_modules

    space = get_space("seed-cnn")
    rows = list(done_ids().values())
    if len(rows) != space.size:
        raise SystemExit(f"{len(rows)}/{space.size} archs trained; run without --latency-table first")
    model = LatencyModel.load(table_path, space)
    for i in tqdm(range(0, len(rows), batch), desc="measure 216 archs", unit="batch"):
        part = rows[i:i + batch]
        results = measure_modules([(space.build(r["arch"]), space.input_shape) for r in part], model.protocol)
        for r, res in zip(part, results, strict=True):
            r["measured_latency_ms"] = res.median_ms
            r["predicted_latency_ms"] = model.predict(r["arch"])
    table = model.table
    write_json(FINAL, {"space": "seed-cnn", "recipe": {**RECIPE, "epochs": rows[0]["epochs"]},
                       "latency_table": str(table_path), "device": table.device["name"],
                       "archs": sorted(rows, key=lambda r: r["arch_id"])})
    print(f"wrote {FINAL}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latency-table", help="measure every arch end to end with this table's protocol")
    args = ap.parse_args()
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"needs the MNIST split at {MNIST}")
    if args.latency_table:
        add_latency(args.latency_table)
    else:
        train_all(args.epochs, args.threads)


if __name__ == "__main__":
    main()
