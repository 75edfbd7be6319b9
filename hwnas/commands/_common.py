"""Helpers shared by the command modules: printing JSON, building configs from flags, common flags."""

from __future__ import annotations

import json
from typing import Any


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def config_from(cls, args, fields: dict[str, str]) -> Any:
    """Build config dataclass ``cls``: YAML from ``args.config`` (if any), then flags that were given.

    ``fields`` maps argparse dest names to config field names; flags left at None do not override.
    """
    from ..config import from_dict, read_yaml

    data = read_yaml(args.config) if getattr(args, "config", None) else {}
    flags = {name: getattr(args, dest) for dest, name in fields.items() if getattr(args, dest, None) is not None}
    data.update(flags)
    return from_dict(cls, data, args.config or "flags", flags=flags)


def _size(text: str) -> list[int]:
    """``"32x32"`` (or ``"32"``: square) as ``[H, W]``."""
    import argparse

    parts = text.lower().replace(",", "x").split("x")
    try:
        size = [int(v) for v in parts]
    except ValueError:
        size = []
    if len(size) == 1:
        size *= 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW with two whole numbers > 0, e.g. 32x32, got {text!r}")
    return size


def _numbers(text: str) -> list[float]:
    """``"0.5,0.5,0.5"`` as ``[0.5, 0.5, 0.5]`` (one value per channel)."""
    import argparse

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, one per channel, e.g. 0.5,0.5,0.5, got "
                                         f"{text!r}") from None


def add_data_flags(p) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="digits (built in, default), mnist, cifar10, fake, imagefolder (class-per-folder "
                                     "images), npz (arrays in a .npz file) or torchvision:NAME (e.g. "
                                     "torchvision:FashionMNIST)")
    g.add_argument("--data-root", help="the dataset's files: mnist: folder of IDX files; cifar10: folder holding "
                                       "cifar-10-batches-py/; imagefolder: folder of CLASS/ folders (or of train/, test/ "
                                       "and optional val/ holding them); npz: the .npz file; torchvision:NAME: "
                                       "torchvision's root folder")
    g.add_argument("--data-limit", type=int, help="use at most this many samples per split (quick runs)")
    g.add_argument("--download", action="store_true", default=None,
                   help="let torchvision download mnist, cifar10 or torchvision:NAME into --data-root (needs internet)")
    g.add_argument("--input-size", type=_size, metavar="HxW", help="resize every image to HxW (bilinear); needed "
                                                                  "when an image folder's images differ in size")
    g.add_argument("--normalize-mean", type=_numbers, metavar="M[,M,M]", help="normalise with this per-channel mean "
                   "(with --normalize-std) instead of the dataset's known or train-split statistics")
    g.add_argument("--normalize-std", type=_numbers, metavar="S[,S,S]", help="per-channel std (> 0) to normalise with")
    g.add_argument("--augment-crop", type=int, metavar="PAD", help="augment training batches: pad PAD pixels, then "
                                                                   "crop back at random (default 0: off)")
    g.add_argument("--augment-flip", action="store_true", default=None,
                   help="augment training batches: random horizontal flip (default off)")


def add_runtime_flags(p) -> None:
    g = p.add_argument_group("run time")
    g.add_argument("--device", help="auto (default: cuda:0 if torch sees a GPU, else cpu), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


DATA_FIELDS = {"dataset": "dataset", "data_root": "data_root", "data_limit": "data_limit",
               "download": "download", "input_size": "input_size", "normalize_mean": "normalize_mean",
               "normalize_std": "normalize_std", "augment_crop": "augment_crop", "augment_flip": "augment_flip",
               "device": "device", "threads": "threads", "seed": "seed"}
