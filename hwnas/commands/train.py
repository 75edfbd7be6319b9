"""``hwnas train ARCH.json``: retrain a derived arch (or fine-tune it from a search) and test it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import TrainConfig
from ._common import DATA_FIELDS, add_data_flags, add_runtime_flags, config_from, print_json

EPILOG = """\
examples:
  hwnas train runs/digits/arch.json                         retrain from scratch, print test accuracy
  hwnas train runs/digits/arch.json --inherit runs/digits   fine-tune from the supernet's weights
  hwnas train runs/digits/arch.json --json                  JSON with test_accuracy, val_accuracy, ...
  hwnas train runs/digits/arch.json --save weights/digits.safetensors
                                                            keep the weights (hwnas export --weights)

--save writes a safetensors file (tensors + JSON metadata: space, arch, hparams and the data settings it
trained on, which `hwnas export ARCH --weights` tests with; never a pickle) outside any run folder; it
replaces only a previous --save file."""

# the TrainConfig keys that say which data the weights saw (``hwnas.data.data_options`` reads the last ones)
TRAINED_DATA = ("dataset", "data_root", "data_limit", "seed", "download", "input_size", "normalize_mean",
                "normalize_std", "augment_crop", "augment_flip")


def register(sub) -> None:
    p = sub.add_parser("train", help="retrain an arch and report its test accuracy",
                       description="Train the plain network of an arch file (from `hwnas search`) on the train "
                                   "split and report validation and test accuracy.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", metavar="ARCH.json", help="arch file written by `hwnas search` (RUN_DIR/arch.json), or "
                                                     "SPACE:NAME of a named arch (proxyless:proxylessnas-mobile)")
    p.add_argument("--config", help="YAML file with TrainConfig keys; flags override it")
    p.add_argument("--inherit", metavar="RUN_DIR", help="start from the supernet weights of this search run")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="training epochs (default 15)")
    g.add_argument("--batch-size", type=int, help="batch size (default 64)")
    g.add_argument("--lr", type=float, help="peak learning rate, SGD one-cycle (default 0.05; try 0.02 with --inherit)")
    add_data_flags(p)
    add_runtime_flags(p)
    p.add_argument("--save", metavar="PATH", help="save the trained weights to PATH, a .safetensors file (state dict "
                                                  "+ space, arch, hparams) for `hwnas export --weights`; not inside "
                                                  "a run folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON (includes test_accuracy)")
    p.set_defaults(func=run)


def check_save_path(path: str | Path) -> Path:
    """Where ``--save`` may write: never over a run folder's own files, never inside a run folder, and over
    an existing file only when it is an hwnas weights file (a previous ``--save``).

    Args:
        path: the ``--save`` argument.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        HwnasError: one line naming the problem and the fix.
    """
    from .._ckpt import checkpoint_kind
    from ..errors import HwnasError
    from ..run import OWNED, enclosing_run

    p = Path(path)
    fix = "pass a new path outside run folders, e.g. --save weights/NAME.safetensors"
    for name in {p.name, p.resolve().name}:
        if name in (*OWNED, "manifest.json") or name.startswith("checkpoint."):
            raise HwnasError(f"--save {p}: {name} is the name of a run folder's own file; {fix}")
    if (run := enclosing_run(p)) is not None:
        raise HwnasError(f"--save {p} is inside the run folder {run.path} (hwnas search writes there); {fix}")
    if p.is_dir():
        raise HwnasError(f"--save {p} is a folder; pass a file path, e.g. --save {p / 'NAME.safetensors'}")
    if p.exists() and checkpoint_kind(p) != "weights":
        raise HwnasError(f"--save {p} exists and is not an hwnas weights file; pick another path (--save replaces "
                         "only a file that an earlier `hwnas train --save` wrote)")
    return p


def data_meta(cfg: TrainConfig) -> dict:
    """The data settings of ``cfg`` for a weights file's meta (``"data"``); an existing relative data_root is
    made absolute, so that an export from another folder finds the same images."""
    data = {k: getattr(cfg, k) for k in TRAINED_DATA}
    if data["data_root"] and Path(data["data_root"]).exists():
        data["data_root"] = str(Path(data["data_root"]).resolve())
    return data


def run(args) -> int:
    from .._ckpt import save_state
    from ..run import read_arch
    from ..search.retrain import train_arch

    rec = read_arch(args.arch)
    space, arch, hparams = rec.build_space(), rec.arch, rec.hparams
    cfg = config_from(TrainConfig, args, {**DATA_FIELDS, "epochs": "epochs", "batch_size": "batch_size", "lr": "lr"})
    if args.save:
        check_save_path(args.save)  # before training, not after
    result, model = train_arch(space, arch, hparams, cfg, inherit=args.inherit, progress=not args.no_progress)
    if args.save:
        save_state(check_save_path(args.save), model.state_dict(), kind="weights",
                   meta={"space": space.name, "space_args": rec.space_args, "arch": arch,
                         "hparams": hparams, "data": data_meta(cfg)})
    if args.json:
        print_json(result.to_json())
    else:
        print(f"arch {result.arch_id}: test accuracy {result.test_accuracy:.4f} "
              f"(val {result.val_accuracy:.4f}, {result.params} parameters, {result.seconds:.0f} s)")
    return 0
