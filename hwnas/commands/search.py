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
    g.add_argument("--arch-lr", type=float, help="architecture learning rate, Adam (default 0.05)")
    g.add_argument("--tau-max", type=float, help="start temperature (gumbel default 5.0, single-path 1.0)")
    g.add_argument("--tau-min", type=float, help="end temperature (gumbel default 0.5, single-path 1.0)")
    g.add_argument("--learn-dropout", action="store_true", default=None,
                   help="also learn the space's continuous dropout rate on the validation loss")
    h = p.add_argument_group("hardware-aware search (latency tables: see `hwnas profile --help`)")
    h.add_argument("--latency-table", metavar="PATH",
                   help="latency table JSON of the target device (default with --target-ms/--hw-loss: the shipped "
                        "table matching this machine)")
    h.add_argument("--hw-loss", help="mul: FBNet CE*a*log(E[T])^b; add: ProxylessNAS CE + lambda*E[T]/T_ref; "
                                     "budget: lambda adapted by dual ascent so E[T] ends under --target-ms "
                                     "(default: budget when a target is given, else mul)")
    h.add_argument("--target-ms", type=float, help="latency budget (ms): the derived arch is the most probable one "
                                                   "predicted at or under it")
    h.add_argument("--targets", metavar="T1,T2,...",
                   help="one search per budget (ms), then candidates.jsonl and pareto.json in RUN_DIR")
    h.add_argument("--seeds", metavar="S1,S2,...", help="one search per seed (x each target)")
    h.add_argument("--hw-lambda", type=float, help="add: weight of the latency term (0.1); budget: start value (0)")
    h.add_argument("--dual-lr", type=float, help="budget: dual-ascent step size on lambda (default 0.2)")
    h.add_argument("--fine-tune-epochs", type=int,
                   help="sweeps: fine-tune each derived arch this many epochs before scoring it (default 3)")
    add_data_flags(p)
    add_runtime_flags(p)
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created; resumed if it holds a checkpoint)")
    p.add_argument("--json", action="store_true", help="print arch.json to stdout at the end")
    p.set_defaults(func=run)


FIELDS = {**DATA_FIELDS, "space": "space", "relaxation": "relaxation", "epochs": "epochs",
          "warmup_epochs": "warmup_epochs", "batch_size": "batch_size", "lr": "lr", "arch_lr": "arch_lr",
          "tau_max": "tau_max", "tau_min": "tau_min", "learn_dropout": "learn_dropout",
          "latency_table": "latency_table", "hw_loss": "hw_loss", "target_ms": "target_ms",
          "hw_lambda": "hw_lambda", "dual_lr": "dual_lr", "fine_tune_epochs": "fine_tune_epochs"}


def _floats(text: str | None, what: str) -> list[float] | None:
    from ..errors import ConfigError

    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, e.g. 0.02,0.04, got {text!r}") from None


def print_front(front: list[dict]) -> None:
    print(f"{'shard':<14} {'arch id':<13} {'accuracy':>8} {'predicted ms':>12} {'measured ms':>11}  arch")
    for c in front:
        meas = c.get("measured_latency_ms")
        print(f"{c['shard']:<14} {c['arch_id']:<13} {c['accuracy']:>8.4f} {c['predicted_latency_ms']:>12.4f} "
              f"{meas if meas is None else round(meas, 4)!s:>11}  {c['arch']}")


def run(args) -> int:
    from ..search import run_search
    from ..search.sweep import run_sweep

    cfg = config_from(SearchConfig, args, FIELDS)
    targets = _floats(args.targets, "--targets")
    seeds = [int(s) for s in _floats(args.seeds, "--seeds") or []]
    if targets or len(seeds) > 1:
        sweep = run_sweep(cfg, targets or [cfg.target_ms], seeds or [cfg.seed], args.out,
                          progress=not args.no_progress)
        if args.json:
            print_json(sweep.pareto)
        else:
            print(f"Pareto front ({len(sweep.pareto)} of {len(sweep.candidates)} candidates; accuracy = "
                  f"{sweep.candidates[0]['accuracy_kind']}):")
            print_front(sweep.pareto)
            print(f"wrote {args.out}/pareto.json and {args.out}/candidates.jsonl")
        return 0
    result = run_search(cfg, args.out, progress=not args.no_progress)
    if args.json:
        print_json(result.to_json())
    else:
        acc = result.val_accuracy
        print(f"derived arch {result.arch_id}: {result.arch}  (supernet val accuracy {acc:.3f})")
        if "predicted_latency_ms" in result.extra:
            e = result.extra
            budget = f", budget {e['target_latency_ms']} ms" if e.get("target_latency_ms") else ""
            print(f"latency: predicted {e['predicted_latency_ms']:.4f} ms, measured {e['measured_latency_ms']:.4f} ms "
                  f"(onnxruntime, {e['device']}{budget})")
        print(f"wrote {args.out}/arch.json; retrain it with: hwnas train {args.out}/arch.json")
    return 0
