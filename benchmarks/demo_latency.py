"""Are the latencies a run recorded true for this machine? (issue 13's check of `make demo`)

For every Pareto entry of RUN_DIR (and its export, if RUN_DIR/export exists) it compares the recorded
`measured_latency_ms` with the table's prediction and with the same network timed alone, afterwards, by a
plain onnxruntime loop (one thread, ORT_ENABLE_ALL, median of 7 trials of 2000 runs, nothing else running).

    python benchmarks/demo_latency.py runs/demo [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hwnas.latency.measure import export_onnx
from hwnas.run import RunFolder, read_front
from hwnas.space import get_space


def time_alone(onnx: bytes, shape: tuple[int, ...], runs: int = 2000, trials: int = 7) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(200):
        sess.run(None, feed)
    medians = []
    for _ in range(trials):
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            ts.append(time.perf_counter_ns() - t0)
        medians.append(statistics.median(ts) / 1e6)
    return statistics.median(medians)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    run = Path(args.run_dir)
    cfg = RunFolder(run).read_config()
    space = get_space(cfg["space"], **(cfg.get("space_args") or {}))
    rows = []
    for c in read_front(run) or []:
        onnx = export_onnx(space.build(c["arch"]).eval(), space.input_shape)
        rows.append({"what": f"front {c['shard']}", "arch_id": c["arch_id"], "source": c.get("latency_source"),
                     "recorded": c.get("measured_latency_ms"), "predicted": c.get("predicted_latency_ms"),
                     "noisy": (c.get("measurement") or {}).get("noisy"), "alone": time_alone(onnx, (1, *space.input_shape))})
    manifest = run / "export" / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        rows.append({"what": "export model.onnx", "arch_id": m["arch_id"], "source": m.get("latency_source"),
                     "recorded": m.get("measured_latency_ms"), "predicted": m.get("predicted_latency_ms"),
                     "noisy": (m.get("measurement") or {}).get("noisy"),
                     "alone": time_alone((run / "export" / "model.onnx").read_bytes(), (1, *space.input_shape))})
    print(f"{'what':<18} {'arch id':<13} {'source':<9} {'recorded':>9} {'predicted':>9} {'alone':>8} "
          f"{'rec/pred':>8} {'rec/alone':>9}")
    for r in rows:
        rec = r["recorded"]
        r["rec_over_pred"] = rec / r["predicted"] if rec and r["predicted"] else None
        r["rec_over_alone"] = rec / r["alone"] if rec else None
        fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
        print(f"{r['what']:<18} {r['arch_id']:<13} {str(r['source']):<9} {fmt(rec, '9.4f')} "
              f"{fmt(r['predicted'], '9.4f')} {r['alone']:8.4f} {fmt(r['rec_over_pred'], '8.3f')} "
              f"{fmt(r['rec_over_alone'], '9.3f')}" + ("  NOISY" if r["noisy"] else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
