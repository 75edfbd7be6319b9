"""The run folder itself: what kind of run it holds, its one writer, and when it may be reused."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._ckpt import PICKLED
from .._io import read_json, write_json
from ..errors import ConfigError, HwnasError
from .layout import (
    ARCH,
    CANDIDATES,
    CHECKPOINT,
    CONFIG,
    FORMAT,
    HISTORY,
    LEGACY_CHECKPOINT,
    LOCK,
    OWNED,
    PARETO,
    RESTART_FIX,
    RUN_RECORD,
    SHARDS,
    VERSION,
)

# settings that may change between a run and its resume (they do not change what is computed)
RESUMABLE = frozenset({"device", "threads", "data_root"})
# the only Ray setting that changes results (data-parallel ranks); the others say where and how shards run
RAY_COMPARED = frozenset({"workers_per_shard"})


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunFolder:
    """A run folder (which may not exist yet). Paths of its files, its kind, its writer lock."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def shard(self, key: str) -> RunFolder:
        return RunFolder(self.path / SHARDS / key)

    @property
    def kind(self) -> str | None:
        """``"search"``, ``"sweep"`` or None (not a run folder). Folders written before ``run.json`` existed
        are recognised by their files."""
        rec = self.path / RUN_RECORD
        if rec.is_file():
            obj = read_json(rec, "run record")
            if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("kind") not in ("search", "sweep"):
                raise HwnasError(f"{rec} is not an hwnas run record; pass the --out folder of an hwnas search")
            if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
                raise HwnasError(f"{rec} has format version {obj.get('version')!r}, newer than this hwnas reads "
                                 f"({VERSION}); upgrade hwnas (pip install -U hwnas)")
            return obj["kind"]
        if not (self.path / CONFIG).is_file():  # every run, old or new, has its config.yaml
            return None
        if any((self.path / n).exists() for n in (PARETO, CANDIDATES, SHARDS)):
            return "sweep"
        if any((self.path / n).is_file() for n in (HISTORY, ARCH)):
            return "search"
        return None

    @contextlib.contextmanager
    def writer(self, command: str) -> Iterator[RunFolder]:
        """Hold the folder's writer lock while the block runs.

        Raises:
            HwnasError: another live process holds it (the message names its command, pid, host and start).
        """
        if self.path.exists() and not self.path.is_dir():
            raise HwnasError(f"--out {self.path} is a file, not a folder; pass a folder path for the run")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise HwnasError(f"cannot write the run folder {self.path} ({err.strerror}); pass an --out you can "
                             "write to") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                raise HwnasError(f"{self.path} is being written by {holder}; wait for it to finish, or pass "
                                 "another --out (one run folder has one writer)") from None
            info = f"`{command}` (pid {os.getpid()} on {socket.gethostname()}, since {_now()})"
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            try:
                yield self
            finally:
                os.ftruncate(fd, 0)  # empty at rest: a finished or refused command leaves it as it found it
        finally:
            os.close(fd)  # releases the lock

    def prepare(self, kind: str, resolved: dict[str, Any], *, fresh: bool = False) -> bool:
        """Make the folder ready for a run of ``kind`` with config ``resolved``; call it holding ``writer``.

        A new or empty folder is started; a folder of the same kind and resolved config is resumed (returns
        True); anything else is refused with the difference and the fix. ``fresh`` first deletes a previous
        run's files (only the names in ``OWNED``).

        Raises:
            HwnasError: the path is a file, a folder that is not a run, a run of the other kind, or a run
                with other settings.
        """
        p = self.path
        if p.exists() and not p.is_dir():
            raise HwnasError(f"--out {p} is a file, not a folder; pass a folder path for the run")
        old_kind = self.kind if p.is_dir() else None
        if fresh and old_kind is not None:
            self.clear()
            old_kind = None
        others = [c.name for c in p.iterdir() if c.name not in OWNED and c.name != LOCK] if p.is_dir() else []
        if old_kind is None and others:
            raise HwnasError(f"--out {p} already holds files that are not an hwnas run ({', '.join(sorted(others)[:3])}"
                             f"{', ...' if len(others) > 3 else ''}); pass a new or empty folder")
        resumed = False
        if old_kind is not None:
            if old_kind != kind:
                raise HwnasError(f"{p} holds a {old_kind}, not a {kind}; a {kind} there would mix with it: pass a "
                                 f"new --out, or add --fresh to delete that {old_kind} and start over")
            if (p / CONFIG).is_file():
                diff = config_diff(self.read_config(), resolved)
                if diff:
                    raise ConfigError(f"{p} holds a {kind} with other settings ({diff}); resume it with the same "
                                     "settings (hwnas search --resume), pass a new --out, or add --fresh to delete "
                                     "it and start over")
            resumed = True
        if not (p / RUN_RECORD).is_file():
            write_json(p / RUN_RECORD, {"format": FORMAT, "version": VERSION, "kind": kind,
                                        "hwnas": _hwnas_version(), "created": _now()})
        if not (p / CONFIG).is_file():  # a resumed run keeps the config it was started with
            write_config(p / CONFIG, resolved)
        return resumed

    def clear(self) -> None:
        """Delete the files of a previous run (only names this layout owns; the lock stays)."""
        for name in OWNED:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def read_config(self) -> dict[str, Any]:
        """The resolved config as written (a mapping whose keys and values pass the config checks).

        Raises:
            HwnasError: no config.yaml, or one that is not valid YAML or has a bad key or value.
        """
        return self.read_settings()[0]

    def read_settings(self) -> tuple[dict[str, Any], tuple[Any, Any, Any]]:
        """The resolved config as written and, validated, its search, sweep and Ray configs (see ``read_config``)."""
        from ..config import read_yaml, split_run_dict

        path = self.path / CONFIG
        if not path.is_file():
            raise HwnasError(f"{self.path} is not a run folder (no {CONFIG}); start it with "
                             f"hwnas search ... --out {self.path}")
        data = read_yaml(path)
        return data, split_run_dict(data, str(path))  # raises ConfigError naming the key


def checkpoint_of(folder: str | Path, *, what: str, fix: str = RESTART_FIX) -> Path | None:
    """The search checkpoint of a run (or shard) folder, or None when it has none.

    Args:
        folder: the run folder.
        what: how the user named the folder's checkpoint, for the message (``"checkpoint"``).
        fix: what to do about a folder that holds only a legacy pickled checkpoint.

    Returns:
        ``folder/checkpoint.safetensors`` when it exists, else None.

    Raises:
        HwnasError: the folder holds only ``checkpoint.pt`` (pickled by an older hwnas; never loaded).
    """
    d = Path(folder)
    if (d / CHECKPOINT).exists():
        return d / CHECKPOINT
    if (d / LEGACY_CHECKPOINT).exists():
        raise HwnasError(f"{what} {d / LEGACY_CHECKPOINT} {PICKLED}; {fix}")
    return None


def enclosing_run(path: str | Path) -> RunFolder | None:
    """The run folder that ``path`` lies in (a shard's folder counts), or None."""
    for d in Path(path).resolve().parents:
        try:
            if RunFolder(d).kind is not None:
                return RunFolder(d)
        except HwnasError:  # a broken run.json: still a run folder
            return RunFolder(d)
    return None


def _hwnas_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hwnas")
    except PackageNotFoundError:
        return "unknown"


def write_config(path: Path, resolved: dict[str, Any]) -> None:
    from ..config import write_yaml

    write_yaml(path, resolved)


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``key: old -> new`` for every setting that changes what a run computes ('' when none). Search keys the
    old config lacks (settings added by a newer hwnas, at their defaults) count as their new value; a sweep's
    keys missing from it (a single search's config) are a difference."""
    from ..config import SWEEP_KEYS

    changes = [f"{k}: (none) -> {new[k]!r}" for k in (*SWEEP_KEYS, "ray") if k in new and k not in old]
    for k, v in new.items():
        if k in RESUMABLE or k not in old:
            continue
        if k == "ray":
            o = old.get("ray") if isinstance(old.get("ray"), dict) else {}
            changes += [f"ray.{r}: {o[r]!r} -> {v[r]!r}" for r in sorted(RAY_COMPARED) if r in o and o[r] != v[r]]
        elif old[k] != v:
            changes.append(f"{k}: {old[k]!r} -> {v!r}")
    return ", ".join(changes)


# ---- resolved configs ------------------------------------------------------------------------------

def sweep_record(cfg: Any, sweep: Any, ray: Any) -> dict[str, Any]:
    """A sweep's resolved config.yaml: search keys, the sweep keys and a ``ray:`` section."""
    return {**cfg.to_dict(), "targets": list(sweep.targets), "seeds": list(sweep.seeds),
            "shards_per_target": sweep.shards_per_target,
            **({"final": dataclasses.asdict(sweep.final)} if getattr(sweep, "final", None) else {}),
            "ray": ray.to_dict()}


def load_settings(run_dir: str | Path) -> tuple[Any, Any, Any, bool]:
    """The settings a run was started with (``hwnas search --resume RUN_DIR``): search, sweep and Ray
    configs, and whether it is a sweep."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise HwnasError(f"{run_dir} does not exist; pass the --out folder of an hwnas search")
    data, configs = folder.read_settings()
    return (*configs, folder.kind == "sweep" or "targets" in data)
