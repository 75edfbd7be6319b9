"""Which arch(s) of a run (or which arch file / named arch) to export, and the weights they carry."""

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
from ..space import Arch, SearchSpace, is_named


@dataclass(frozen=True)
class Selected:
    """One arch to export: its space, arch, hparams, and the run folder holding its supernet checkpoint (for an
    arch outside a run, ``origin`` names it and its weights can only come from ``--weights``)."""

    space: SearchSpace
    arch: Arch
    arch_id: str
    hparams: dict[str, float]
    source: Path  # folder with checkpoint.safetensors (the run, or the shard of a sweep); else the arch ref
    entry: dict[str, Any]  # the arch.json object or the pareto.json entry
    origin: str | None = None  # an arch outside a run: "named arch SPACE:NAME" or "arch file NAME"


WEIGHTS_FIX = "pass a file written by `hwnas train ARCH.json --save PATH.safetensors`"
DEFAULT_DATA = "digits"  # what an arch outside a run is tested on when its weights record no data


def is_arch_ref(ref: str | Path) -> bool:
    """``ref`` names an arch outside a run: not a folder, but a named arch ``SPACE:NAME`` or a file."""
    return not Path(ref).is_dir() and (is_named(ref) or Path(ref).is_file())


def select_arch(ref: str | Path, which: str, weights: str | Path | None
                ) -> tuple[Selected, dict[str, Any], dict[str, Any]]:
    """The one arch of the arch file or named arch ``ref``, the data settings to test it on (those the
    ``--weights`` were trained on, recorded by ``hwnas train --save``; else digits) and the manifest fields
    that say where arch and data came from.

    Raises:
        HwnasError: no ``--weights`` (an arch outside a run has none), ``--arch`` other than best, an arch
            or weights file that cannot be read, data settings the weights record wrongly.
    """
    rec = read_arch(ref)
    origin = f"named arch {ref}" if is_named(ref) else f"arch file {Path(ref).name}"
    if weights is None:
        raise HwnasError(f"{ref} is an arch outside a run: it has no trained weights; train it with `hwnas train "
                         f"{ref} --save W.safetensors` and pass --weights W.safetensors")
    if which not in ("best", rec.arch_id):
        raise HwnasError(f"--arch {which}: {origin} holds one arch ({rec.arch_id}); leave --arch out (or pass "
                         "best) for an arch file or a named arch, --arch all is for a sweep's run folder")
    space = rec.build_space()
    sel = Selected(space, rec.arch, rec.arch_id, rec.hparams, Path(str(ref)), rec.to_json(), origin)
    _, meta = _load_checkpoint(Path(weights), "weights", "--weights", WEIGHTS_FIX)
    _check_weights_meta(sel, Path(weights), meta)  # before its data: a file of another arch names that first
    data = meta.get("data")
    if data is None:  # written by an hwnas train from before the data was recorded
        if (tuple(space.input_shape), space.num_classes) != ((1, 28, 28), 10):
            raise HwnasError(f"--weights {weights} record no training data (an older `hwnas train --save`) and "
                             f"space {space.name!r} does not take {DEFAULT_DATA}, the default; retrain with "
                             f"`hwnas train {ref} --dataset NAME --save W.safetensors` (it records its data)")
        cfg: dict[str, Any] = {"dataset": DEFAULT_DATA}
        note = (f"{DEFAULT_DATA}, the default: --weights {Path(weights).name} record no training data (written by "
                "an older `hwnas train --save`)")
    else:
        cfg = _trained_data(data, Path(weights))
        note = f"the data the weights were trained on, as `hwnas train --save` recorded it ({cfg['dataset']})"
    kind = f"top-1 accuracy of this file through onnxruntime on the test split of {cfg['dataset']}"
    return sel, cfg, {"arch_source": origin, "data_source": note, "accuracy_kind": kind}


def _trained_data(data: Any, path: Path) -> dict[str, Any]:
    """The ``"data"`` meta of a weights file, checked as ``TrainConfig`` keys."""
    from dataclasses import asdict

    from ..config import TrainConfig, from_dict

    if not isinstance(data, dict):
        raise HwnasError(f"--weights {path}: its data record is not a mapping (got {type(data).__name__}); retrain "
                         "with `hwnas train ARCH --save PATH.safetensors`")
    try:
        return asdict(from_dict(TrainConfig, data, f"--weights {path} (data record)"))
    except HwnasError as err:
        raise HwnasError(f"{err}; retrain with `hwnas train ARCH --save PATH.safetensors`") from None


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
        raise HwnasError(f"{run} does not exist: it is neither a run folder nor an arch file; pass the --out folder "
                         "of a finished `hwnas search`, an arch JSON file (`hwnas train` takes the same) or a named "
                         "arch SPACE:NAME (e.g. proxyless:proxylessnas-mobile)")
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
        state, meta = _load_checkpoint(path, "weights", "--weights", WEIGHTS_FIX)
        _check_weights_meta(sel, path, meta)
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


def _check_weights_meta(sel: Selected, path: Path, meta: dict[str, Any]) -> None:
    """The space and arch a weights file records (when it does) must be ``sel``'s.

    Raises:
        HwnasError: weights of another space or another arch (the message names theirs).
    """
    space = sel.space
    if meta.get("space", space.name) != space.name:
        owner, fix = (("the run's arch", "this run's arch") if sel.origin is None else (sel.origin, "it"))
        raise HwnasError(f"--weights {path} holds a network of space {meta.get('space')!r}, but {owner} "
                         f"is in space {space.name!r}; pass weights trained for {fix}")
    trained = meta.get("arch")
    if trained is not None and (not isinstance(trained, dict) or dict(trained) != dict(sel.arch)):
        other = space.arch_id(trained) if isinstance(trained, dict) and _valid(space, trained) else "?"
        fix = (f"pass --arch {other} if the run has it" if sel.origin is None else
               "pass the arch they were trained for")
        raise HwnasError(f"--weights {path} were trained for arch {other}, not {sel.arch_id}; {fix}, or "
                         "retrain with `hwnas train` and --save")


def _valid(space: SearchSpace, arch: Any) -> bool:
    try:
        space.validate(arch)
        return True
    except (HwnasError, TypeError):
        return False
