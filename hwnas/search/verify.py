"""Derive, then verify: a shard's result is the best of the k most probable archs within its budget.

The single most probable arch under the budget is a noisy pick: at a middle budget it was only about the
median of the archs that fit. So, per shard, ``derive_k`` returns the ``verify_k`` most probable distinct
archs that meet the budget (exact), each is fine-tuned for ``fine_tune_epochs`` from the supernet's
weights on the training split and scored on the validation split, and the best on validation (ties: the
more probable) is the shard's result. Each fine-tune's record is written to ``verify/<arch_id>.json`` as
it finishes, so a shard killed while verifying resumes with the archs it has not scored yet. Without a
latency table the search has no budget and verification scores the one most probable arch.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .._ckpt import load_state
from .._io import read_json, write_json
from ..config import SearchConfig
from ..data import data_options
from ..errors import HwnasError
from ..run import VERIFY, checkpoint_of
from ..space import Arch, get_space
from ._runtime import load_for
from .loop import SearchState
from .retrain import train_arch


@dataclass
class Verified:
    """One of the k archs, fine-tuned and scored (``verify/<arch_id>.json``)."""

    rank: int  # 0 = the most probable within the budget
    arch: Arch
    arch_id: str
    predicted_latency_ms: float | None
    log_prob: float | None
    val_accuracy: float
    seconds: float


def options(cfg: SearchConfig, shard_dir: str | Path) -> list[tuple[Arch, float | None, float | None]]:
    """The ``cfg.verify_k`` most probable archs within the budget of the finished search in ``shard_dir``:
    ``(arch, predicted ms, log-probability)``, most probable first."""
    fix = "rerun the shard (hwnas search --resume RUN_DIR)"
    ckpt = checkpoint_of(shard_dir, what="shard checkpoint", fix=fix)
    if ckpt is None:
        raise HwnasError(f"{shard_dir}: no search checkpoint to derive from; {fix}")
    state, _ = load_state(ckpt, kind="search", what="shard checkpoint", fix=fix)
    st = SearchState(cfg, torch.device("cpu"))
    st.load_state_dict(state)
    return st.derive_k(cfg.verify_k)


def verify(cfg: SearchConfig, shard_dir: str | Path, hparams: dict[str, float]) -> tuple[Verified, list[Verified]]:
    """Fine-tune and score each of the k archs (reusing the records already in ``verify/``).

    Returns:
        ``(the best on validation, every record in derivation order)``.
    """
    d = Path(shard_dir)
    space = get_space(cfg.space, **cfg.space_args)
    tcfg = cfg.train_config(epochs=cfg.fine_tune_epochs, lr=cfg.lr * cfg.fine_tune_lr_factor)
    splits = None
    records: list[Verified] = []
    for rank, (arch, predicted, log_prob) in enumerate(options(cfg, d)):
        arch_id = space.arch_id(arch)
        path = d / VERIFY / f"{arch_id}.json"
        if (done := _read(path, arch_id, cfg.fine_tune_epochs)) is not None:
            records.append(done)
            continue
        if splits is None:
            splits = load_for(space, cfg.dataset, cfg.data_root, cfg.seed, cfg.data_limit, **data_options(cfg))
        t0 = time.perf_counter()
        trained, _ = train_arch(space, arch, hparams, tcfg, inherit=d, progress=False, splits=splits)
        rec = Verified(rank, arch, arch_id, predicted, log_prob, trained.val_accuracy,
                       round(time.perf_counter() - t0, 2))
        write_json(path, {**asdict(rec), "epochs": cfg.fine_tune_epochs})
        records.append(rec)
    best = max(records, key=lambda r: (r.val_accuracy, -r.rank))
    return best, records


def _read(path: Path, arch_id: str, epochs: int) -> Verified | None:
    """A finished fine-tune's record, or None (absent, or from other settings: then it is redone)."""
    if not path.is_file():
        return None
    try:
        obj: dict[str, Any] = read_json(path, "verification record")
        if obj.get("arch_id") != arch_id or obj.get("epochs") != epochs:
            return None
        return Verified(**{k: obj[k] for k in Verified.__dataclass_fields__})
    except (HwnasError, ValueError, KeyError, TypeError):
        return None  # a torn or foreign file: fine-tune again (the record is rewritten atomically)


def summary(best: Verified, records: list[Verified]) -> dict[str, Any]:
    """What a candidate keeps of its verification."""
    return {"verify_k": len(records), "verify_seconds": round(sum(r.seconds for r in records), 2),
            "verified": [{"rank": r.rank, "arch_id": r.arch_id, "predicted_latency_ms": r.predicted_latency_ms,
                          "val_accuracy": r.val_accuracy} for r in records],
            "derived_rank": best.rank}
