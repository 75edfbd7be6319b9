"""``hwnas finalize RUN_DIR``: retrain a sweep's candidates from scratch with several seeds and rank the
front on their test accuracy with 95% intervals."""

from __future__ import annotations

import argparse
import dataclasses

from .._extras import require
from ..config import FinalConfig, from_dict
from ..errors import ConfigError
from ..run import load_settings
from ._common import print_json

EPILOG = """\
examples:
  hwnas finalize runs/sweep                          the run's final: block, else 15 epochs x seeds 0,1,2
  hwnas finalize runs/sweep --epochs 10 --seeds 0,1,2,3,4
  hwnas finalize runs/sweep --no-ray                 one run after another in this process

Every candidate of the sweep (each shard's result; the front is among them) is trained from scratch on
the training split with each seed and scored on the test split; each (arch, seed) writes
RUN_DIR/final/<arch_id>-s<seed>.json when it finishes, so rerunning the command resumes. Then
candidates.jsonl and pareto.json are rewritten: accuracy = the mean test accuracy, accuracy_ci = its 95%
t-interval, accuracy_runs = the seeds' accuracies, search_accuracy = the search's own number, and
accuracy_kind says which number the front holds. An arch leaves the front only when another is at least
as fast and better beyond both intervals. The report (pareto.png with error bars) is rewritten too.
The runs are Ray tasks with the sweep's cpus_per_shard/gpus_per_shard (its ray: section), queued when
they outnumber the cluster's slots."""


def register(sub) -> None:
    p = sub.add_parser("finalize", help="retrain a sweep's candidates with several seeds; front with intervals",
                       description="Final training: rank a sweep's candidates on test accuracy of archs trained "
                                   "from scratch with several seeds (mean and 95% interval).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a sweep (hwnas search --targets ...)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the run's final: block, else 15)")
    p.add_argument("--seeds", metavar="S1,S2,...", help="one run per seed and arch (default 0,1,2)")
    p.add_argument("--lr", type=float, help="peak learning rate of the one-cycle schedule (default 0.05)")
    r = p.add_argument_group("Ray")
    r.add_argument("--no-ray", action="store_true", help="train one after another in this process")
    r.add_argument("--ray-address", metavar="ADDRESS", help="join this cluster, or local: a private one (default: as "
                                                            "the sweep: $RAY_ADDRESS if set, else the one `hwnas "
                                                            "cluster up` runs, else a private local cluster)")
    p.add_argument("--no-report", action="store_true", help="skip rewriting RUN_DIR/report")
    p.add_argument("--json", action="store_true", help="print the new pareto.json to stdout")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def final_config(args, planned: FinalConfig | None) -> FinalConfig:
    """The run's ``final:`` block (or the defaults) with the flags applied."""
    base = dataclasses.asdict(planned or FinalConfig())
    if args.seeds is not None:
        try:
            base["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds must be comma-separated whole numbers, e.g. 0,1,2, got {args.seeds!r}") from None
    base.update({k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None})
    return from_dict(FinalConfig, base, "flags")


def run(args) -> int:
    from ..search.finalize import finalize
    from .search import print_front

    _, sweep, ray_cfg, is_sweep = load_settings(args.run_dir)
    if not is_sweep:
        raise ConfigError(f"{args.run_dir} is a single search, not a sweep; retrain its arch with: "
                          f"hwnas train {args.run_dir}/arch.json --epochs E --seed S")
    final = final_config(args, sweep.final)
    runner = None
    if not args.no_ray:
        require("ray", "final training on Ray", "or pass --no-ray to train here, one after another")
        from ..distributed.final import ray_runner

        runner = ray_runner(ray_cfg.replace(address=args.ray_address or ray_cfg.address),
                            progress=not args.no_progress)
    front = finalize(args.run_dir, final, progress=not args.no_progress, runner=runner)
    if args.json:
        print_json(front)
    else:
        print(f"Pareto front ({len(front)} archs; accuracy = {front[0]['accuracy_kind']}):")
        print_front(front)
    if not args.no_report:
        from ..report import write_report

        path = write_report(args.run_dir)
        if not args.json:
            print(f"report: {path}")
    return 0
