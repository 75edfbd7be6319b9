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


def add_data_flags(p) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="digits (built in, default), mnist, cifar10 or fake")
    g.add_argument("--data-root", help="folder with the dataset files (mnist: IDX files; cifar10: torchvision layout)")
    g.add_argument("--data-limit", type=int, help="use at most this many samples per split (quick runs)")


def add_runtime_flags(p) -> None:
    g = p.add_argument_group("run time")
    g.add_argument("--device", help="auto (default: cuda:0 if torch sees a GPU, else cpu), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


DATA_FIELDS = {"dataset": "dataset", "data_root": "data_root", "data_limit": "data_limit",
               "device": "device", "threads": "threads", "seed": "seed"}
