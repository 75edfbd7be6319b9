"""Retrain a derived arch from scratch, or fine-tune it from a search's supernet weights."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._ckpt import load_state
from ..config import TrainConfig
from ..data import Splits, augment_batches, augment_for, data_options, make_loader
from ..errors import HwnasError
from ..run import CHECKPOINT, CONFIG, RESTART_FIX, RunFolder, checkpoint_of, space_from
from ..space import Arch, SearchSpace
from ..supernet import Supernet
from ._runtime import check_data_fits, evaluate, load_for, resolve_device, seed_everything, set_threads


@dataclass
class TrainResult:
    """Accuracies of one retrained arch (``--json`` prints this)."""

    space: str
    arch: Arch
    arch_id: str
    test_accuracy: float
    val_accuracy: float
    train_accuracy: float
    test_loss: float
    epochs: int
    params: int
    inherited_from: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def inherit_weights(space: SearchSpace, arch: Arch, hparams: dict[str, float], run_dir: str | Path) -> nn.Module:
    """The plain network of ``arch`` with the weights of the supernet in ``run_dir/checkpoint.safetensors``.

    Raises:
        HwnasError: no checkpoint, only a legacy pickled ``checkpoint.pt`` (never loaded), a file that is not
            an hwnas search checkpoint, or a checkpoint of another space.
    """
    run = Path(run_dir)
    fix = "rerun the search or retrain from scratch without --inherit"
    ckpt = checkpoint_of(run, what=f"--inherit {run}:", fix=f"{RESTART_FIX}, or retrain from scratch without --inherit")
    if ckpt is None:
        raise HwnasError(f"--inherit {run}: no {CHECKPOINT} there; pass the RUN_DIR of a finished `hwnas search`")
    cfg = RunFolder(run).read_config()
    searched = space_from(cfg.get("space"), cfg.get("space_args"), f"--inherit {run / CONFIG}")
    if (searched.name, searched.args) != (space.name, space.args):
        raise HwnasError(f"--inherit {run}: that search used space {searched.name!r} {searched.args or ''}, the arch "
                         f"is in {space.name!r} {space.args or ''}; pass the run that searched this arch's space")
    state, _ = load_state(ckpt, kind="search", what=f"--inherit {run}: checkpoint", fix=fix)
    try:
        net = Supernet(space)
        net.load_state_dict(state["net"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HwnasError(f"--inherit {run}: {CHECKPOINT} cannot be loaded into a {space.name} supernet ({msg}); "
                         f"{fix}") from None
    return net.extract(arch, hparams)


def train_arch(space: SearchSpace, arch: Arch, hparams: dict[str, float], cfg: TrainConfig, *,
               inherit: str | Path | None = None, progress: bool = True, splits: Splits | None = None
               ) -> tuple[TrainResult, nn.Module]:
    """Train ``arch`` on the train split (SGD, cosine), report val and test accuracy.

    Args:
        space, arch, hparams: what to build (``space.build(arch, hparams)``).
        cfg: training settings.
        inherit: a search run folder whose supernet weights initialise the network (fine-tuning).
        progress: show a progress bar over epochs.

    Returns:
        The result and the trained module (eval mode, on the CPU).
    """
    t0 = time.perf_counter()
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    arch = space.validate(arch)
    if splits is None:
        splits = load_for(space, cfg.dataset, cfg.data_root, cfg.seed, cfg.data_limit, **data_options(cfg))  # loads and checks
    else:
        check_data_fits(space, splits)
    model = inherit_weights(space, arch, hparams, inherit) if inherit else space.build(arch, hparams)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    steps = cfg.epochs * math.ceil(len(splits.train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    bar = tqdm(range(cfg.epochs), desc=f"train {space.arch_id(arch)}", unit="epoch", disable=not progress,
               dynamic_ncols=True)
    train_acc = 0.0
    augment = augment_for(cfg, splits.mean, splits.std)  # None unless augment_crop/augment_flip
    for epoch in bar:
        model.train()
        correct = n = 0
        seed = cfg.seed * cfg.data_seed_stride + epoch
        train = make_loader(splits.train, cfg.batch_size, shuffle=True, seed=seed)
        for x, y in augment_batches(train, augment, seed):
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        train_acc = correct / max(n, 1)
        bar.set_postfix(train_acc=f"{train_acc:.3f}")
    model.eval()
    _, val_acc = evaluate(model, make_loader(splits.val, 256, shuffle=False), device)
    test_loss, test_acc = evaluate(model, make_loader(splits.test, 256, shuffle=False), device)
    result = TrainResult(space.name, arch, space.arch_id(arch), test_acc, val_acc, train_acc, test_loss, cfg.epochs,
                         sum(p.numel() for p in model.parameters()), str(inherit) if inherit else None,
                         round(time.perf_counter() - t0, 2))
    return result, model.cpu()
