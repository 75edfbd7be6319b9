"""Which arch(s) of a run to export, and the weights they carry."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import read_json
from ..errors import HwnasError
from ..space import Arch, SearchSpace, get_space


@dataclass(frozen=True)
class Selected:
    """One arch to export: its space, arch, hparams, and the run folder holding its supernet checkpoint."""

    space: SearchSpace
    arch: Arch
    arch_id: str
    hparams: dict[str, float]
    source: Path  # folder with checkpoint.pt (the run, or the shard of a sweep)
    entry: dict[str, Any]  # the arch.json object or the pareto.json entry


def run_config(run: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` (space, dataset, data_root, data_limit, seed, ...); ``{}`` when absent."""
    from ..config import read_yaml

    path = run / "config.yaml"
    if not path.is_file():
        return {}
    try:
        return dict(read_yaml(path) or {})
    except Exception as err:  # yaml raises its own types
        raise HwnasError(f"{path} is not valid YAML ({err}); rerun the search that wrote it") from None


def select(run_dir: str | Path, which: str) -> list[Selected]:
    """The arch(s) ``which`` names in ``run_dir``: ``best``, ``all`` or an arch id.

    ``best`` is ``arch.json`` of a single search, or the most accurate pareto.json entry of a sweep
    (whose weights are in ``shards/<shard>/``). ``all`` is every Pareto entry (or the one arch).

    Raises:
        HwnasError: no run folder, no arch.json/pareto.json, an unknown arch id, an arch of another space.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise HwnasError(f"run folder {run} does not exist; pass the --out folder of a finished `hwnas search`")
    cfg = run_config(run)
    pareto_path, arch_path = run / "pareto.json", run / "arch.json"
    if pareto_path.is_file():
        entries = read_json(pareto_path, "Pareto front")
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) and "arch" in e for e in entries):
            raise HwnasError(f"{pareto_path} is empty or not a list of candidates with an 'arch'; rerun the sweep")
        space_name = cfg.get("space") or "seed-cnn"
        space = get_space(space_name, **(cfg.get("space_args") or {}))
        cands = []
        for e in entries:
            arch = space.validate(e["arch"])
            src = run / "shards" / str(e.get("shard", ""))
            cands.append(Selected(space, arch, space.arch_id(arch), {}, src, e))
        cands = [_with_shard_hparams(c) for c in cands]
    elif arch_path.is_file():
        obj = read_json(arch_path, "arch file")
        if not isinstance(obj, dict) or "space" not in obj:
            raise HwnasError(f"{arch_path} has no 'space' key; rerun `hwnas search --out {run}`")
        if cfg.get("space") and cfg["space"] != obj["space"]:
            raise HwnasError(f"{arch_path} is an arch of space {obj['space']!r} but the run searched "
                             f"{cfg['space']!r}; restore the arch.json the search wrote")
        space = get_space(obj["space"], **(obj.get("space_args") or cfg.get("space_args") or {}))
        arch, hparams = space.from_json(obj)
        cands = [Selected(space, arch, space.arch_id(arch), hparams, run, obj)]
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
    path = c.source / "arch.json"
    if not path.is_file():
        return c
    obj = read_json(path, "arch file")
    try:
        arch, hparams = c.space.from_json(obj)
    except HwnasError:
        return c
    return Selected(c.space, c.arch, c.arch_id, hparams if arch == c.arch else {}, c.source, c.entry)


def _torch_load(path: Path, what: str, fix: str) -> Any:
    if not path.is_file():
        raise HwnasError(f"{what} {path} does not exist; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            AttributeError, ImportError, IndexError, KeyError, TypeError) as err:
        raise HwnasError(f"{what} {path} is corrupted or not a torch file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); {fix}") from None


def load_module(sel: Selected, weights: str | Path | None) -> nn.Module:
    """The plain network of ``sel`` (eval mode) with the ``--weights`` file's or the supernet's weights.

    Raises:
        HwnasError: a missing or corrupted file, a file of another space or arch, tensors that do not fit.
    """
    space, arch = sel.space, sel.arch
    if weights is not None:
        path = Path(weights)
        fix = "pass a file written by `hwnas train ARCH.json --save PATH`"
        obj = _torch_load(path, "--weights", fix)
        if not isinstance(obj, dict) or "state_dict" not in obj:
            raise HwnasError(f"--weights {path} has no 'state_dict'; {fix}")
        if obj.get("space", space.name) != space.name:
            raise HwnasError(f"--weights {path} holds a network of space {obj.get('space')!r}, but the run's "
                             f"arch is in space {space.name!r}; pass weights trained for this run's arch")
        if obj.get("arch") is not None and dict(obj["arch"]) != dict(arch):
            other = space.arch_id(obj["arch"]) if _valid(space, obj["arch"]) else "?"
            raise HwnasError(f"--weights {path} were trained for arch {other}, not {sel.arch_id}; pass "
                             f"--arch {other} if the run has it, or retrain with `hwnas train` and --save")
        module = space.build(arch, obj.get("hparams") or sel.hparams)
        try:
            module.load_state_dict(obj["state_dict"], strict=True)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise HwnasError(f"--weights {path} do not fit arch {sel.arch_id} ({str(err).splitlines()[0]}); "
                             "pass weights trained for this arch (`hwnas train ARCH.json --save PATH`)") from None
        return module.eval()
    from ..supernet import Supernet

    ckpt = sel.source / "checkpoint.pt"
    fix = f"rerun `hwnas search --out {sel.source}` or pass --weights from `hwnas train --save`"
    state = _torch_load(ckpt, "checkpoint", fix)
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
