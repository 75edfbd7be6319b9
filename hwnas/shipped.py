"""What hwnas ships besides code: the latency tables and example configs, in a checkout or an installed wheel.

In a checkout they are the top-level ``latency_tables/`` and ``configs/`` folders; the wheel carries the same
files as package data under ``hwnas/_shipped/`` (``setup.py`` copies them there at build time), so one
lookup finds them either way. Also here: the per-user folder where ``hwnas profile`` writes tables when it
runs outside a checkout (``platformdirs``: ``~/.local/share/hwnas/latency_tables`` on Linux).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

TABLES, CONFIGS = "latency_tables", "configs"
_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def shipped_dir(kind: str) -> Path | None:
    """The shipped ``latency_tables`` or ``configs`` folder: the installed package data, else the checkout's."""
    for root in (_PACKAGE / "_shipped" / kind, _CHECKOUT / kind):
        if root.is_dir():
            return root
    return None


def user_tables_dir() -> Path:
    """This user's table folder (``platformdirs.user_data_dir("hwnas")/latency_tables``)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("hwnas", appauthor=False)) / TABLES


def env_table_dirs() -> list[Path]:
    """The folders in ``$HWNAS_LATENCY_TABLES`` (``os.pathsep``-separated), in order."""
    return [Path(p).expanduser() for p in os.environ.get("HWNAS_LATENCY_TABLES", "").split(os.pathsep) if p]


def tables_home() -> Path:
    """Where a new table is written by default: the first ``$HWNAS_LATENCY_TABLES`` folder; else
    ``./latency_tables`` when the working folder has one (a checkout or a project of the user's); else
    ``user_tables_dir()``."""
    env = env_table_dirs()
    if env:
        return env[0]
    here = Path(TABLES)  # relative, as a user typing the path would see it
    return here if here.is_dir() else user_tables_dir()


def shipped_configs() -> dict[str, Path]:
    """Shipped example configs by name (file stem), e.g. ``digits-demo``."""
    root = shipped_dir(CONFIGS)
    return {} if root is None else {p.stem: p for p in sorted(root.glob("*.yaml"))}


def config_summary(path: Path) -> str:
    """The first comment line of a config file (what it is for)."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def resolve_config(name: str | Path) -> Path:
    """``name`` as a path when that file exists; else a shipped config of that name (``mnist`` or
    ``mnist.yaml``); else a one-line ``ConfigError`` listing the shipped ones."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    known = shipped_configs()
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if str(name) in (stem, f"{stem}.yaml", f"{CONFIGS}/{stem}.yaml") and stem in known:
        return known[stem]
    names = ", ".join(known) or "none"
    raise ConfigError(f"config file {name} does not exist; pass a YAML file or a shipped config by name "
                      f"({names}; `hwnas configs NAME` prints one to copy)")
