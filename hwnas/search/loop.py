"""The one-process bilevel search: weights on the train split, architecture on the validation split.

``run_search(cfg, out_dir)`` needs no Ray. Per step: a weight step (SGD) on a train batch with a sample
from the relaxation, then (after the warm-up epochs) an architecture step (Adam) on a validation batch:
``loss = CE + hardware term``. Each epoch appends a line to ``history.jsonl`` and checkpoints the whole
state atomically, so an interrupted search resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._ckpt import load_state, save_state
from .._io import append_jsonl, write_json
from ..config import SearchConfig
from ..data import Splits, augment_batches, augment_for, data_options, make_loader
from ..errors import HwnasError
from ..relax import Sample, make_relaxation
from ..run import ARCH, CHECKPOINT, HISTORY, RunFolder, checkpoint_of, write_lines
from ..space import Arch, get_space
from ..supernet import Supernet
from ._dist import SINGLE, Single
from ._dropout import LearnedRate
from ._runtime import check_data_fits, evaluate, load_for, resolve_device, seed_everything, set_threads
from .derive import derive, derive_k
from .hardware import make_hardware_term
from .targets import describe_targets, load_targets


@dataclass
class SearchResult:
    """What a search returns (and writes as ``arch.json``)."""

    space: str
    arch: Arch
    arch_id: str
    hparams: dict[str, float]
    val_accuracy: float  # of the derived arch with the supernet's weights
    history: list[dict[str, Any]]
    run_dir: Path | None
    seconds: float
    space_args: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        space = get_space(self.space, **self.space_args)
        return space.to_json(self.arch, self.hparams, supernet_val_accuracy=self.val_accuracy,
                             search_seconds=round(self.seconds, 2), **self.extra)


class SearchState:
    """Everything a search checkpoint holds."""

    def __init__(self, cfg: SearchConfig, device: torch.device, dp: Single = SINGLE) -> None:
        self.dp = dp
        self.space = get_space(cfg.space, **cfg.space_args)
        self.net = Supernet(self.space).to(device)
        tau = {k: v for k, v in (("tau_max", cfg.tau_max), ("tau_min", cfg.tau_min)) if v is not None}
        self.relax = make_relaxation(cfg.relaxation, self.space, **tau).to(device)
        if cfg.subspace:
            self.relax.restrict(cfg.subspace)
        self.w_opt = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay, nesterov=True)
        self.a_opt = torch.optim.Adam(self.relax.arch_parameters(), lr=cfg.arch_lr,
                                      betas=(cfg.arch_beta1, cfg.arch_beta2), weight_decay=cfg.arch_weight_decay)
        self.grad_clip = cfg.weight_grad_clip  # max global L2 norm of the weight step's gradient
        self.rates = {c.label: LearnedRate(c).to(device) for c in self.space.continuous} if cfg.learn_dropout else {}
        self.h_opt = (torch.optim.Adam([r.theta for r in self.rates.values()], lr=cfg.hypergrad_lr)
                      if self.rates else None)
        self.targets = load_targets(cfg, self.space)  # primary first; empty for accuracy-only searches
        self.latency = self.targets[0].model if self.targets else None
        self.latency_path = self.targets[0].table if self.targets else None
        self.others = [(t.model, t.budget_ms) for t in self.targets[1:]]  # what derivation checks besides
        self.hw = (make_hardware_term([t.model for t in self.targets], cfg.hw_loss,
                                      target_ms=[t.budget_ms for t in self.targets], lam=cfg.hw_lambda,
                                      a=cfg.fbnet_a, b=cfg.fbnet_b, dual_lr=cfg.dual_lr, margin=cfg.dual_margin
                                      ).to(device) if self.targets else None)
        self.target_ms = cfg.target_ms
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.epoch = 0  # next epoch to run
        self.step = 0
        self.history: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "relax": self.relax.state_dict(), "w_opt": self.w_opt.state_dict(),
                "a_opt": self.a_opt.state_dict(), "rates": {k: r.state_dict() for k, r in self.rates.items()},
                "h_opt": self.h_opt.state_dict() if self.h_opt else None, "gen": self.gen.get_state(),
                "hw": self.hw.state_dict() if self.hw is not None else None,
                "torch_rng": torch.get_rng_state(),
                "epoch": self.epoch, "step": self.step, "history": self.history}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.net.load_state_dict(s["net"])
        self.relax.load_state_dict(s["relax"])
        self.w_opt.load_state_dict(s["w_opt"])
        self.a_opt.load_state_dict(s["a_opt"])
        for k, r in self.rates.items():
            r.load_state_dict(s["rates"][k])
        if self.h_opt and s["h_opt"]:
            self.h_opt.load_state_dict(s["h_opt"])
        self.gen.set_state(s["gen"])
        if "torch_rng" in s:
            torch.set_rng_state(s["torch_rng"].cpu())
        if self.hw is not None and s.get("hw") is not None:
            self.hw.load_state_dict(s["hw"])
        self.epoch, self.step, self.history = s["epoch"], s["step"], s["history"]

    def derive(self) -> tuple[Arch, float | None]:
        """The arch to report: the most probable one, under the budget(s) when there are any, and its
        predicted latency on the primary target (None without a latency table)."""
        if self.latency is None:
            return self.relax.derive(), None
        with torch.no_grad():
            return derive(self.latency, self.relax.probs(), self.target_ms, allowed=self.relax.allowed,
                          others=self.others)

    def derive_k(self, k: int) -> list[tuple[Arch, float | None, float | None]]:
        """The ``k`` most probable archs under the budget: ``(arch, predicted ms, log-prob)``, most probable
        first (``derive.derive_k``); without a latency table only the most probable arch."""
        if self.latency is None:
            return [(self.relax.derive(), None, None)]
        with torch.no_grad():
            return derive_k(self.latency, self.relax.probs(), self.target_ms, k, allowed=self.relax.allowed,
                            others=self.others)

    def hparams(self) -> dict[str, float]:
        return {k: round(r.value(), 4) for k, r in self.rates.items()}

    def shared_tensors(self) -> list[torch.Tensor]:
        """What must be identical on every data-parallel rank: weights, buffers, architecture parameters."""
        return [*self.net.parameters(), *self.net.buffers(), *self.relax.arch_parameters(),
                *(r.theta for r in self.rates.values())]


def _lr_at(cfg: SearchConfig, epoch: float) -> float:
    """Cosine schedule from ``cfg.lr`` to 0 over the search."""
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))


def run_search(cfg: SearchConfig, out_dir: str | Path | None = None, *, progress: bool = True,
               splits: Splits | None = None, dp: Single = SINGLE,
               on_checkpoint: Callable[[], None] | None = None, fresh: bool = False,
               measure: bool = True) -> SearchResult:
    """Run one search to the end (resuming ``out_dir`` when it holds the same search).

    ``out_dir`` is held with the run folder's writer lock (``hwnas.run``): a second process gets a one-line
    error; a folder of another kind or with other settings is refused unless ``fresh`` (delete, restart).
    Other arguments: see ``_run_search``.
    """
    folder = RunFolder(out_dir) if out_dir is not None and dp.is_main else None
    with folder.writer("hwnas search") if folder is not None else contextlib.nullcontext():
        if folder is not None:
            folder.prepare("search", cfg.to_dict(), fresh=fresh)
        return _run_search(cfg, out_dir, progress=progress, splits=splits, dp=dp, on_checkpoint=on_checkpoint,
                           measure=measure)


def _run_search(cfg: SearchConfig, out_dir: str | Path | None = None, *, progress: bool = True,
                splits: Splits | None = None, dp: Single = SINGLE,
                on_checkpoint: Callable[[], None] | None = None, measure: bool = True) -> SearchResult:
    """Run one search to the end (resuming from ``out_dir/checkpoint.safetensors`` when it exists).

    Args:
        cfg: the validated search config.
        out_dir: run folder for ``config.yaml``, ``history.jsonl``, ``checkpoint.safetensors``, ``arch.json``;
            None keeps everything in memory.
        progress: show a progress bar over epochs.
        splits: pre-loaded data (else loaded from ``cfg``).
        dp: data parallelism (``hwnas.search._dist.DataParallel`` inside a process group): every rank runs
            this function on its slice of each batch; only rank 0 writes files.
        on_checkpoint: called (rank 0) after each epoch's checkpoint is written, e.g. to upload it.
        measure: time the derived arch end to end at the end (``latency.quiet``; only when the table is this
            host's). A sweep's shards pass False: the sweep measures every candidate after training.

    Returns:
        The derived arch with its supernet validation accuracy and the per-epoch history; with a latency
        table also its predicted latency, ``latency_source``/``latency_device`` and, when measured on the
        table's own device, ``measured_latency_ms`` and its ``measurement`` record.
    """
    t0 = time.perf_counter()
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    st = SearchState(cfg, device, dp)
    if splits is None:
        splits = load_for(st.space, cfg.dataset, cfg.data_root, cfg.seed, cfg.data_limit,
                          **data_options(cfg))  # loads and checks
    else:
        check_data_fits(st.space, splits)
    src = Path(out_dir) if out_dir is not None else None  # every rank resumes from it
    out = src if dp.is_main else None  # only rank 0 writes
    ckpt = checkpoint_of(src, what="search checkpoint") if src is not None else None
    if ckpt is not None:  # data only (never a pickle); tensors land on their module's/optimizer's device
        fix = "add --fresh to restart this search from epoch 0, or pass a new --out"
        state, _ = load_state(ckpt, kind="search", what="search checkpoint", fix=fix)
        try:
            st.load_state_dict(state)
        except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as err:
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise HwnasError(f"search checkpoint {ckpt} does not fit this search ({msg}); {fix}") from None
    dp.broadcast(st.shared_tensors())
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        # the checkpoint is the truth: drop history lines of an epoch that died before its checkpoint
        write_lines(out / HISTORY, st.history)

    val_eval = make_loader(splits.val, 256, shuffle=False)
    bar = tqdm(total=cfg.epochs, initial=st.epoch, desc=f"search {cfg.space}/{cfg.relaxation}", unit="epoch",
               disable=not (progress and dp.is_main), dynamic_ncols=True)
    while st.epoch < cfg.epochs:
        record = _run_epoch(st, cfg, splits, device)
        dp.average_buffers(st.net)
        diff = dp.check_identical(st.relax.arch_parameters(), "the architecture parameters")
        if dp.world > 1:  # evidence, per epoch, that every rank holds the same architecture distribution
            record.update(data_parallel_ranks=dp.world, arch_params_max_rank_diff=diff)
        fixed = Sample.fixed(st.space, record["arch"])
        st.net.eval()
        record["derived_val_loss"], record["derived_val_accuracy"] = evaluate(
            lambda x, fixed=fixed: st.net(x, fixed), val_eval, device)
        st.history.append(record)
        st.epoch += 1
        if out is not None:
            # checkpoint first: an epoch's history line exists only once its checkpoint does (a process killed
            # in between resumes from that checkpoint and rewrites history.jsonl from it)
            save_state(out / CHECKPOINT, st.state_dict(), kind="search",
                       meta={"space": cfg.space, "space_args": dict(cfg.space_args), "epoch": st.epoch})
            append_jsonl(out / HISTORY, record)
            if on_checkpoint is not None:
                on_checkpoint()
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_acc=f"{record['derived_val_accuracy']:.3f}")
        bar.update(1)
    bar.close()

    final = st.history[-1]
    extra: dict[str, Any] = {}
    if st.latency is not None and dp.is_main:
        from ..latency.quiet import measure_for, provenance

        # nothing else runs now (a sweep's shards pass measure=False and are measured after training)
        timed = st.latency.space  # the table's geometry (st.space.latency_space(), e.g. proxyless at 224)
        measured = measure_for(st.latency, timed.build(final["arch"]), timed.input_shape) if measure else None
        extra = {"predicted_latency_ms": final["predicted_latency_ms"], "target_latency_ms": cfg.target_ms,
                 "latency_table": st.latency_path, "device": st.latency.table.device.get("name"),
                 "latency_targets": describe_targets(st.targets, final["arch"]),
                 **provenance(st.latency.table, measured)}
    elif dp.is_main:
        extra = {"latency_source": None}
    result = SearchResult(cfg.space, final["arch"], st.space.arch_id(final["arch"]), st.hparams(),
                          final["derived_val_accuracy"], st.history, out, time.perf_counter() - t0,
                          dict(cfg.space_args), extra)
    if out is not None:
        write_json(out / ARCH, result.to_json())
    return result


def _run_epoch(st: SearchState, cfg: SearchConfig, splits: Splits, device: torch.device) -> dict[str, Any]:
    epoch, t0 = st.epoch, time.perf_counter()
    arch_phase = epoch >= cfg.warmup_epochs
    span = max(cfg.epochs - cfg.warmup_epochs - 1, 1)
    st.relax.set_progress((epoch - cfg.warmup_epochs) / span if arch_phase else 0.0)
    data_seed = cfg.seed * cfg.data_seed_stride + epoch
    train = make_loader(splits.train, cfg.batch_size, shuffle=True, seed=data_seed, drop_last=True)
    train = augment_batches(train, augment_for(cfg, splits.mean, splits.std), data_seed)  # off: train itself
    val = make_loader(splits.val, cfg.batch_size, shuffle=True, seed=data_seed + cfg.val_seed_offset, drop_last=True)
    train_loss = train_acc = 0.0
    arch_sums: dict[str, float] = {}
    n_w = n_a = 0
    steps = len(train)
    for i, ((x, y), (xv, yv)) in enumerate(zip(train, itertools.cycle(val))):
        for g in st.w_opt.param_groups:
            g["lr"] = _lr_at(cfg, epoch + i / steps)
        x, y, xv, yv = st.dp.shard(x.to(device), y.to(device), xv.to(device), yv.to(device))
        loss, acc = weight_step(st, x, y)
        train_loss, train_acc, n_w = train_loss + loss, train_acc + acc, n_w + 1
        if not arch_phase:
            continue
        m = arch_step(st, xv, yv, train_batch=(x, y), seed=cfg.seed * cfg.hypergrad_seed_stride + st.step)
        for k, v in m.items():
            arch_sums[k] = arch_sums.get(k, 0.0) + v
        n_a += 1
        st.step += 1
    rec: dict[str, Any] = {"epoch": epoch, "arch_phase": arch_phase, "lr": _lr_at(cfg, epoch + 1)}
    mean = st.dp.mean  # metrics of the whole batch, averaged over data-parallel ranks
    rec["train_loss"], rec["train_accuracy"] = mean(train_loss / max(n_w, 1)), mean(train_acc / max(n_w, 1))
    names = {"arch_ce": "val_loss", "arch_acc": "val_accuracy"}  # of the sampled/mixed supernet
    rec.update({names.get(k, k): mean(v / n_a) for k, v in sorted(arch_sums.items())})
    arch, predicted = st.derive()
    rec.update(relax=st.relax.describe(), entropy=st.relax.entropies(), probs=st.relax.probs_dict(),
               hparams=st.hparams(), arch=arch, seconds=round(time.perf_counter() - t0, 3))
    if st.hw is not None:
        with torch.no_grad():
            rec["expected_latency_ms_end"] = float(st.hw.expected(st.relax.probs()))
        rec.update(predicted_latency_ms=predicted, lambda_end=float(st.hw.lam[0]), target_ms=cfg.target_ms)
        if len(st.targets) > 1:  # every target's state at the end of the epoch (the first is the primary)
            with torch.no_grad():
                t_end = st.hw.expected_all(st.relax.probs()).tolist()
            rec["latency_targets"] = [{**t.describe(arch), "expected_latency_ms_end": e, "lambda_end": float(lam)}
                                      for t, e, lam in zip(st.targets, t_end, st.hw.lam, strict=True)]
    return rec


def weight_step(st: SearchState, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """One SGD step on the supernet's weights (train batch); the sample is a constant here.

    The gradient's global L2 norm is clipped to ``st.grad_clip`` (config ``weight_grad_clip``).

    Returns:
        (loss, accuracy) on the batch.

    Raises:
        HwnasError: the loss or the (rank-averaged) gradient is NaN or infinite; the weights are not stepped.
    """
    st.net.train()
    with torch.no_grad():
        sample = st.relax.sample(st.gen)
    sample.hparams = {k: r.rate().detach() for k, r in st.rates.items()}
    logits = st.net(x, sample)  # (B, classes)
    loss = F.cross_entropy(logits, y)
    st.w_opt.zero_grad(set_to_none=True)
    loss.backward()
    st.dp.average_grads(st.net.parameters())
    norm = torch.nn.utils.clip_grad_norm_(st.net.parameters(), st.grad_clip)
    value = loss.item()
    _check_finite(st, "weight loss (cross-entropy on a train batch)", value, "--lr")
    _check_finite(st, "weight gradient norm", float(norm), "--lr")  # the same on every data-parallel rank
    st.w_opt.step()
    return value, float((logits.argmax(1) == y).float().mean())


def _check_finite(st: SearchState, what: str, value: float, flag: str) -> None:
    """Stop the search with one line when ``value`` (a loss, a norm) is NaN or infinite.

    Callers check before their optimiser step; the epoch that diverged is never checkpointed, so the
    checkpoint of the last finished epoch stays as it is.
    """
    if not math.isfinite(value):
        raise HwnasError(f"the {what} became {value} in epoch {st.epoch + 1}: the search diverged and stopped "
                         f"(nothing of this epoch is saved; the run folder keeps the checkpoint of the last finished "
                         f"epoch); rerun with a lower {flag} and a new --out")


def arch_step(st: SearchState, x: torch.Tensor, y: torch.Tensor, *,
              train_batch: tuple[torch.Tensor, torch.Tensor] | None = None, seed: int = 0) -> dict[str, float]:
    """One Adam step on the architecture logits (validation batch): ``loss = CE (+ hardware term)``.

    With learned hyperparameters (dropout) it then takes their hypergradient step on ``train_batch``.

    Returns:
        ``arch_loss``, ``arch_ce``, ``arch_acc`` and the hardware term's metrics.

    Raises:
        HwnasError: the architecture loss is NaN or infinite; nothing is stepped.
    """
    st.net.train()
    sample = st.relax.sample(st.gen)
    logits = st.net(x, sample)
    ce = F.cross_entropy(logits, y)
    if st.dp.world > 1:  # the value of the whole batch (running baselines), the gradient of this rank's slice
        ce = ce + (st.dp.mean(ce.item()) - ce.detach())
    loss = st.relax.arch_loss(ce, sample)
    metrics: dict[str, float] = {}
    if st.hw is not None:
        loss, metrics = st.hw(loss, st.relax.probs())
    # the value is the whole batch's on every data-parallel rank, so every rank stops here together
    _check_finite(st, "architecture loss (validation batch)", loss.item(), "--arch-lr")
    st.a_opt.zero_grad(set_to_none=True)
    st.w_opt.zero_grad(set_to_none=True)
    loss.backward()
    st.dp.average_grads(st.relax.arch_parameters())
    st.a_opt.step()
    # a finite loss can still overflow Adam's moments (a huge --arch-lr): stop here, not at the next weight step
    size = torch.cat([a.detach().flatten() for a in st.relax.arch_parameters()]).abs().max()
    _check_finite(st, "largest architecture logit (after an architecture step)", float(size), "--arch-lr")
    if st.rates and train_batch is not None:
        st.dp.average_grads(st.net.parameters())  # grad_w L_val of the whole batch
        for r in st.rates.values():
            r.hypergradient_step(st.net, lambda: st.relax.sample(st.gen), *train_batch,
                                 st.w_opt.param_groups[0]["lr"], st.h_opt, seed=seed, sync=st.dp.average_grads)
    st.w_opt.zero_grad(set_to_none=True)
    return {"arch_loss": loss.item(), "arch_ce": ce.item(),
            "arch_acc": float((logits.argmax(1) == y).float().mean()), **metrics}
