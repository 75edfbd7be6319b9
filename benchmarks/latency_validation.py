"""Validate the shipped latency tables of this machine: predicted vs measured on held-out archs.

For every space, measures ``--samples`` held-out archs end to end (half uniform, half from the middle of
the latency range; seed differs from calibration) and prints, side by side in the same run, the
calibrated predictor, the overhead-corrected sum and the plain additive table. Writes everything
(metrics and per-arch measurements) to ``benchmarks/results/latency_validation.json``.

Run it pinned to one core, like the tables were measured::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/latency_validation.py --samples 200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from hwnas.commands.latency import print_report
from hwnas.latency import default_table_path, find_table, validate_table
from hwnas.latency.protocol import Protocol
from hwnas.latency.table import now, read_table

KEYS = ("mape", "within_5pct", "within_10pct", "kendall_tau", "max_abs_pct_err", "bias_pct", "constraint_precision")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spaces", nargs="+", default=["seed-cnn", "mbconv"], help="spaces to validate")
    p.add_argument("--samples", type=int, default=200, help="held-out archs per space (default 200)")
    p.add_argument("--seed", type=int, default=1, help="validation RNG seed (default 1; calibration used 0)")
    p.add_argument("--runs", type=int, default=None, help="override the tables' runs per trial")
    p.add_argument("--trials", type=int, default=None, help="override the tables' trials")
    p.add_argument("--out", default="benchmarks/results/latency_validation.json", help="result JSON")
    args = p.parse_args(argv)

    results = {"date": now(), "load_avg_start": list(os.getloadavg()), "samples": args.samples, "spaces": {}}
    for name in args.spaces:
        path = find_table(name) or default_table_path(name)
        path = Path(os.path.relpath(path)) if Path(path).is_absolute() else Path(path)
        table = read_table(path)
        proto = Protocol.from_dict(table.protocol)
        changes = {k: v for k, v in (("runs", args.runs), ("trials", args.trials)) if v is not None}
        proto = dataclasses.replace(proto, **changes)
        start = time.monotonic()
        report = validate_table(path, args.samples, args.seed, proto)
        report["wall_s"] = time.monotonic() - start
        print(f"\n== {name}  ({path}, {report['wall_s']:.0f} s)")
        print_report(report)
        results["spaces"][name] = report
    results["load_avg_end"] = list(os.getloadavg())

    print("\nsummary (calibrated | additive table)")
    for name, r in results["spaces"].items():
        cells = [f"{k}={r[k]:.3g}|{r['additive_baseline'][k]:.3g}" for k in KEYS
                 if r[k] is not None and r["additive_baseline"][k] is not None]
        print(f"{name:<9} " + " ".join(cells))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
