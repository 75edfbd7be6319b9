"""``hwnas search``: run a differentiable architecture search and write the run folder."""

from __future__ import annotations

import argparse

from ..config import SearchConfig
from ._common import DATA_FIELDS, add_data_flags, add_runtime_flags, config_from, print_json

EPILOG = """\
examples:
  hwnas search --space seed-cnn --dataset digits --relaxation gumbel --epochs 10 --out runs/digits
  hwnas search --config configs/digits.yaml --seed 3 --out runs/seed3

The run folder gets config.yaml (resolved), history.jsonl (one line per epoch: losses, accuracies,
entropy and probabilities of each choice, the derived arch), checkpoint.pt (the whole state, written
atomically each epoch: rerunning the same command resumes) and arch.json (the derived arch)."""


def register(sub) -> None:
    p = sub.add_parser("search", help="search a supernet and derive an arch",
                       description="Train a weight-sharing supernet and its architecture distribution by "
                                   "bilevel gradient descent (weights on the train split, architecture on the "
                                   "validation split), then derive the most probable arch.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with SearchConfig keys; flags override it")
    p.add_argument("--space", help="search space (see `hwnas spaces`; default seed-cnn)")
    p.add_argument("--relaxation", help="softmax (DARTS mixture), gumbel (FBNet, annealed; default) or "
                                        "single-path (one hard sample per step, about one sub-network's cost)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="search epochs (default 10)")
    g.add_argument("--warmup-epochs", type=int, help="first epochs train weights only (default 2)")
    g.add_argument("--batch-size", type=int, help="batch size for both splits (default 64)")
    g.add_argument("--lr", type=float, help="weight learning rate, SGD with cosine decay (default 0.05)")
    g.add_argument("--arch-lr", type=float, help="architecture learning rate, Adam (default 0.01)")
    g.add_argument("--tau-max", type=float, help="start temperature (gumbel default 5.0, single-path 1.0)")
    g.add_argument("--tau-min", type=float, help="end temperature (gumbel default 0.5, single-path 1.0)")
    g.add_argument("--learn-dropout", action="store_true", default=None,
                   help="also learn the space's continuous dropout rate on the validation loss")
    add_data_flags(p)
    add_runtime_flags(p)
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created; resumed if it holds a checkpoint)")
    p.add_argument("--json", action="store_true", help="print arch.json to stdout at the end")
    p.set_defaults(func=run)


FIELDS = {**DATA_FIELDS, "space": "space", "relaxation": "relaxation", "epochs": "epochs",
          "warmup_epochs": "warmup_epochs", "batch_size": "batch_size", "lr": "lr", "arch_lr": "arch_lr",
          "tau_max": "tau_max", "tau_min": "tau_min", "learn_dropout": "learn_dropout"}


def run(args) -> int:
    from ..search import run_search

    cfg = config_from(SearchConfig, args, FIELDS)
    result = run_search(cfg, args.out, progress=not args.no_progress)
    if args.json:
        print_json(result.to_json())
    else:
        acc = result.val_accuracy
        print(f"derived arch {result.arch_id}: {result.arch}  (supernet val accuracy {acc:.3f})")
        print(f"wrote {args.out}/arch.json; retrain it with: hwnas train {args.out}/arch.json")
    return 0
