"""``hwnas train ARCH.json``: retrain a derived arch (or fine-tune it from a search) and test it."""

from __future__ import annotations

import argparse

from .._io import read_json
from ..config import TrainConfig
from ._common import DATA_FIELDS, add_data_flags, add_runtime_flags, config_from, print_json

EPILOG = """\
examples:
  hwnas train runs/digits/arch.json                         retrain from scratch, print test accuracy
  hwnas train runs/digits/arch.json --inherit runs/digits   fine-tune from the supernet's weights
  hwnas train runs/digits/arch.json --json                  JSON with test_accuracy, val_accuracy, ..."""


def register(sub) -> None:
    p = sub.add_parser("train", help="retrain an arch and report its test accuracy",
                       description="Train the plain network of an arch file (from `hwnas search`) on the train "
                                   "split and report validation and test accuracy.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", metavar="ARCH.json", help="arch file written by `hwnas search` (RUN_DIR/arch.json)")
    p.add_argument("--config", help="YAML file with TrainConfig keys; flags override it")
    p.add_argument("--inherit", metavar="RUN_DIR", help="start from the supernet weights of this search run")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="training epochs (default 15)")
    g.add_argument("--batch-size", type=int, help="batch size (default 64)")
    g.add_argument("--lr", type=float, help="peak learning rate, SGD one-cycle (default 0.05; try 0.02 with --inherit)")
    add_data_flags(p)
    add_runtime_flags(p)
    p.add_argument("--save", metavar="PATH", help="save the trained weights (state dict) to PATH")
    p.add_argument("--json", action="store_true", help="print the result as JSON (includes test_accuracy)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .._io import save_torch
    from ..search.retrain import train_arch
    from ..space import get_space

    obj = read_json(args.arch, "arch file")
    if not isinstance(obj, dict) or "space" not in obj:
        from ..errors import HwnasError

        raise HwnasError(f"arch file {args.arch} has no 'space' key; use an arch.json written by `hwnas search`")
    space = get_space(obj["space"], **obj.get("space_args", {}))
    arch, hparams = space.from_json(obj)
    cfg = config_from(TrainConfig, args, {**DATA_FIELDS, "epochs": "epochs", "batch_size": "batch_size", "lr": "lr"})
    result, model = train_arch(space, arch, hparams, cfg, inherit=args.inherit, progress=not args.no_progress)
    if args.save:
        save_torch(args.save, {"space": space.name, "arch": arch, "hparams": hparams, "state_dict": model.state_dict()})
    if args.json:
        print_json(result.to_json())
    else:
        print(f"arch {result.arch_id}: test accuracy {result.test_accuracy:.4f} "
              f"(val {result.val_accuracy:.4f}, {result.params} parameters, {result.seconds:.0f} s)")
    return 0
