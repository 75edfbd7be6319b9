"""Which arch(s) of a run to export, and the weights they carry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .._ckpt import load_state
from ..errors import HwnasError
from ..run import (
    ARCH,
    CHECKPOINT,
    CONFIG,
    PARETO,
    RESTART_FIX,
    RunFolder,
    checkpoint_of,
    read_arch,
    read_front,
    space_from,
)
from ..space import Arch, SearchSpace


@dataclass(frozen=True)
class Selected:
    """One arch to export: its space, arch, hparams, and the run folder holding its supernet checkpoint."""

    space: SearchSpace
    arch: Arch
    arch_id: str
    hparams: dict[str, float]
    source: Path  # folder with checkpoint.safetensors (the run, or the shard of a sweep)
    entry: dict[str, Any]  # the arch.json object or the pareto.json entry


def select(run_dir: str | Path, which: str) -> list[Selected]:
    """The arch(s) ``which`` names in ``run_dir``: ``best``, ``all`` or an arch id.

    ``best`` is ``arch.json`` of a single search, or the most accurate pareto.json entry of a sweep
    (whose weights are in ``shards/<shard>/``). ``all`` is every Pareto entry (or the one arch). The
    space (and its ``space_args``) comes from the run's resolved config.

    Raises:
        HwnasError: no run folder, no arch.json/pareto.json, an unknown arch id, an arch of another space.
    """
    folder = RunFolder(run_dir)
    run = folder.path
    if not run.is_dir():
        raise HwnasError(f"run folder {run} does not exist; pass the --out folder of a finished `hwnas search`")
    entries = read_front(run)
    if entries is not None:
        if not entries:
            raise HwnasError(f"{run / PARETO} is empty: no shard of the sweep has finished; finish it with "
                             f"hwnas search --resume {run}")
        cfg = folder.read_config()
        space = space_from(cfg.get("space"), cfg.get("space_args"), str(run / CONFIG))
        cands = []
        for i, e in enumerate(entries):
            try:
                arch = space.validate(e["arch"])
            except HwnasError as err:
                raise HwnasError(f"{run / PARETO} entry {i}: {err}; rerun the sweep") from None
            src = folder.shard(str(e.get("shard", ""))).path
            cands.append(_with_shard_hparams(Selected(space, arch, space.arch_id(arch), {}, src, e)))
    elif (run / ARCH).is_file():
        rec = read_arch(run / ARCH)
        cfg = folder.read_config() if (run / CONFIG).is_file() else {}
        if cfg.get("space") and (cfg["space"], cfg.get("space_args") or {}) != (rec.space, rec.space_args):
            raise HwnasError(f"{run / ARCH} is an arch of space {rec.space!r} {rec.space_args or ''} but the run "
                             f"searched {cfg['space']!r} {cfg.get('space_args') or ''}; restore the arch.json the "
                             "search wrote")
        space = rec.build_space()
        cands = [Selected(space, rec.arch, rec.arch_id, rec.hparams, run, rec.to_json())]
    else:
        raise HwnasError(f"{run} has no arch.json (nor pareto.json): it is not a finished search run; "
                         f"run `hwnas search --out {run}` first or pass the right RUN_DIR")
    if which == "all":
        return cands
    if which == "best":
        return [max(cands, key=lambda c: c.entry.get("accuracy") or 0.0)]
    hits = [c for c in cands if c.arch_id == which]
    if not hits:
        raise HwnasError(f"--arch {which}: no such arch id in {run}; pick one of "
                         f"{sorted({c.arch_id for c in cands})}, 'best' or 'all'")
    return hits[:1]


def _with_shard_hparams(c: Selected) -> Selected:
    """The learned hyperparameters of the shard's own arch.json (when it derived this arch)."""
    if not (c.source / ARCH).is_file():
        return c
    try:
        rec = read_arch(c.source / ARCH)
    except HwnasError:
        return c
    return Selected(c.space, c.arch, c.arch_id, rec.hparams if rec.arch == c.arch else {}, c.source, c.entry)


def _load_checkpoint(path: Path, kind: str, what: str, fix: str) -> tuple[Any, dict[str, Any]]:
    """``(state, meta)`` of an hwnas checkpoint of ``kind`` (data only: a pickle is refused, never loaded)."""
    state, meta = load_state(path, kind=kind, what=what, fix=fix)
    return state, meta if isinstance(meta, dict) else {}


def load_module(sel: Selected, weights: str | Path | None) -> nn.Module:
    """The plain network of ``sel`` (eval mode) with the ``--weights`` file's or the supernet's weights.

    Raises:
        HwnasError: a missing or corrupted file, a file of another space or arch, tensors that do not fit.
    """
    space, arch = sel.space, sel.arch
    if weights is not None:
        path = Path(weights)
        fix = "pass a file written by `hwnas train ARCH.json --save PATH.safetensors`"
        state, meta = _load_checkpoint(path, "weights", "--weights", fix)
        if meta.get("space", space.name) != space.name:
            raise HwnasError(f"--weights {path} holds a network of space {meta.get('space')!r}, but the run's "
                             f"arch is in space {space.name!r}; pass weights trained for this run's arch")
        trained = meta.get("arch")
        if trained is not None and (not isinstance(trained, dict) or dict(trained) != dict(arch)):
            other = space.arch_id(trained) if isinstance(trained, dict) and _valid(space, trained) else "?"
            raise HwnasError(f"--weights {path} were trained for arch {other}, not {sel.arch_id}; pass "
                             f"--arch {other} if the run has it, or retrain with `hwnas train` and --save")
        hparams = meta.get("hparams") if isinstance(meta.get("hparams"), dict) else None
        module = space.build(arch, hparams or sel.hparams)
        try:
            module.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise HwnasError(f"--weights {path} do not fit arch {sel.arch_id} ({str(err).splitlines()[0]}); "
                             "pass weights trained for this arch (`hwnas train ARCH.json --save PATH`)") from None
        return module.eval()
    from ..supernet import Supernet

    fix = f"rerun `hwnas search --out {sel.source}` or pass --weights from `hwnas train --save`"
    ckpt = checkpoint_of(sel.source, what="checkpoint", fix=f"{RESTART_FIX}, or pass --weights from "
                          "`hwnas train --save`") or sel.source / CHECKPOINT
    state, _ = _load_checkpoint(ckpt, "search", "checkpoint", fix)
    try:
        net = Supernet(space)
        net.load_state_dict(state["net"])
        return net.extract(arch, sel.hparams).eval()
    except (RuntimeError, KeyError, TypeError, AttributeError, IndexError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HwnasError(f"checkpoint {ckpt} does not fit a {space.name} supernet ({msg}); {fix}") from None


def _valid(space: SearchSpace, arch: Any) -> bool:
    try:
        space.validate(arch)
        return True
    except (HwnasError, TypeError):
        return False
