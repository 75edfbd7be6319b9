"""``hwnas configs``: the example configs shipped with hwnas (usable by name from any folder)."""

from __future__ import annotations

from ..errors import ConfigError
from ..shipped import config_summary, shipped_configs


def register(sub) -> None:
    p = sub.add_parser("configs", help="list the shipped example configs, or print one to copy",
                       description="List the example configs shipped with hwnas, or print one (to start your "
                                   "own: `hwnas configs mnist > my.yaml`). `--config NAME` takes a shipped "
                                   "config by name from any folder, e.g. `hwnas search --config digits-demo "
                                   "--out runs/demo`; a file of that name in the working folder wins.")
    p.add_argument("name", nargs="?", help="a shipped config to print (e.g. digits-demo)")
    p.set_defaults(func=run)


def run(args) -> int:
    known = shipped_configs()
    if args.name is None:
        for name, path in known.items():
            print(f"{name:<16} {config_summary(path)}")
        return 0
    name = args.name.removesuffix(".yaml")
    if name not in known:
        raise ConfigError(f"no shipped config {args.name!r}; the shipped ones are {', '.join(known) or 'none'}")
    print(known[name].read_text(), end="")
    return 0
