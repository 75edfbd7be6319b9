"""fp32 vs int8 on this host, side by side: a few seed-cnn archs timed in one round-robin batch per repeat, both
precisions (int8 quantised as ``hwnas export --int8`` does), next to the fp32 and int8 tables' predictions.

    python benchmarks/int8_vs_fp32.py --fp32 T/dev/seed-cnn.json --int8 T/dev/seed-cnn.int8.json [--repeats 3]

Both tables must be this host's (the measurement uses the int8 table's protocol). Prints one line per arch
and writes ``benchmarks/results/int8_vs_fp32.json`` (measured medians of every repeat, both predictions).
"""

from __future__ import annotations

import argparse
import random
import warnings
from pathlib import Path

from hwnas._io import write_json
from hwnas.latency import LatencyModel, Protocol
from hwnas.latency.measure import measure_onnx, to_model
from hwnas.space import get_space

OUT = Path(__file__).resolve().parent / "results" / "int8_vs_fp32.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", required=True, help="this host's fp32 seed-cnn table")
    ap.add_argument("--int8", required=True, help="this host's int8 seed-cnn table (hwnas profile --precision int8)")
    ap.add_argument("--repeats", type=int, default=3, help="round-robin batches (default 3)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    space = get_space("seed-cnn")
    f32 = LatencyModel.load(args.fp32, space)
    i8 = LatencyModel.load(args.int8, space, precision="int8")
    base = space.sample(random.Random(0))
    archs = {"fastest by the int8 table": i8.min_latency()[0], "slowest by the int8 table": i8.max_latency()[0],
             "seed default": space.validate({**base, "C_i": 32, "C_o": 64, "k": 3, "k_p": 2, "n": 256, "act": "relu"})}
    models = []
    for name, arch in archs.items():
        models += [to_model(f"{name}|fp32", space.build(arch), space.input_shape),
                   to_model(f"{name}|int8", space.build(arch), space.input_shape, "int8")]
    protocol = Protocol.from_dict(i8.table.protocol)
    runs = [{m.name: r.median_ms for m, r in zip(models, measure_onnx(models, protocol), strict=True)}
            for _ in range(args.repeats)]
    out = []
    for name, arch in archs.items():
        mf, mq = [r[f"{name}|fp32"] for r in runs], [r[f"{name}|int8"] for r in runs]
        row = {"arch": name, "values": arch, "fp32_predicted_ms": f32.predict(arch), "int8_predicted_ms": i8.predict(arch),
               "fp32_measured_ms": mf, "int8_measured_ms": mq}
        out.append(row)
        print(f"{name:26} fp32 predicted {row['fp32_predicted_ms']:.4f} measured {min(mf):.4f}-{max(mf):.4f} | "
              f"int8 predicted {row['int8_predicted_ms']:.4f} measured {min(mq):.4f}-{max(mq):.4f} | "
              f"int8/fp32 predicted {row['int8_predicted_ms'] / row['fp32_predicted_ms']:.2f}")
    write_json(args.out, out)


if __name__ == "__main__":
    main()
