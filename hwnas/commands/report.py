"""``hwnas report RUN_DIR``: report.md and PNG figures of a search run or a sweep."""

from __future__ import annotations

import argparse
import json

EPILOG = """\
examples:
  hwnas report runs/digits                     one search: writes runs/digits/report/report.md + PNGs
  hwnas report runs/pareto --out reports/p     a sweep (--targets/--seeds), into another folder

Figures (those the run's data allows; report.md says why any is missing):
  pareto.png                 accuracy vs measured latency: every candidate, the front, the budgets
  probs.png                  each label's choice probabilities over the epochs (sweeps: the shard of the
                             most accurate front entry; the other shards get probs-<shard>.png)
  latency.png                E[T], the derived arch's predicted latency, the budget and lambda per epoch
  predicted_vs_measured.png  the latency table's prediction vs the onnxruntime measurement
report.md adds the run's settings, the Pareto table, the cost per shard (wall-clock, device-hours) and the
search trend in a few computed sentences."""


def register(sub) -> None:
    p = sub.add_parser("report", help="write report.md and PNG figures of a search run",
                       description="Summarise a search run or sweep: Pareto front, choice probabilities, latency "
                                   "over the epochs, predicted vs measured latency, cost and trend.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `hwnas search` (one search or a sweep)")
    p.add_argument("--out", metavar="DIR", help="where to write report.md and the PNGs (default RUN_DIR/report)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..report import write_report
    from .search import print_front

    path = write_report(args.run_dir, args.out)
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    front = Path(args.run_dir) / "pareto.json"
    if front.is_file():
        print("Pareto front:")
        print_front(json.loads(front.read_text()))
    print(f"wrote {path}")
    print(f"figures in {path.parent}: {', '.join(pngs) if pngs else 'none (see report.md)'}")
    return 0
