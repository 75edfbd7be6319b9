"""The hardware term of the architecture loss, from the exact expected latency ``E[T]``.

Three forms, chosen with ``--hw-loss`` (``budget`` is the default when ``--target-ms`` is given):

* ``mul`` (FBNet):          ``L = CE * a * log(E[T] / 1us) ** b``   (config ``fbnet_a`` 0.2, ``fbnet_b`` 0.6)
* ``add`` (ProxylessNAS):   ``L = CE + lam * E[T] / T_ref``           (config ``hw_lambda``, default 0.1)
* ``budget``:               ``L = CE + sum_j lam_j * (E[T_j] / T_j - 1)`` over the targets ``j`` (one, or
  several with ``--target``: ``hwnas.search.targets``), each ``lam_j >= 0`` adapted by dual ascent after
  every architecture step, ``lam_j <- max(0, lam_j + eta * (E[T_j] / (T_j * (1 - margin)) - 1))``:
  it grows while the expected latency on target ``j`` is over its (slightly tightened) budget and relaxes
  once under it (``eta`` = config ``dual_lr``, ``margin`` = ``dual_margin``), so the distribution settles at
  the budgets instead of wherever a fixed penalty puts it. One target is the case ``j = 0`` of the same code.

FBNet's log is taken of the latency in microseconds so that it stays positive for the sub-millisecond
networks of small spaces. Every form's gradient reaches the architecture logits exactly through
``probs()``; relaxations and latency models stay unaware of each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..latency import LatencyModel
from ..registry import Registry

HW_LOSSES: Registry[type] = Registry("hardware loss")


class HardwareTerm(nn.Module):
    """``term(loss, probs) -> (loss with the hardware cost, metrics)``; state lives in buffers so that
    it is checkpointed with the search. ``models[0]``/``targets_ms[0]`` are the primary target (the only one
    ``mul`` and ``add`` use); ``lam`` holds one multiplier per target."""

    name = "base"

    def __init__(self, models: Sequence[LatencyModel], *, targets_ms: Sequence[float | None], ref_ms: float,
                 lam: float, a: float, b: float, dual_lr: float, margin: float) -> None:
        super().__init__()
        self.models, self.targets_ms = list(models), list(targets_ms)
        self.model, self.target_ms = self.models[0], self.targets_ms[0]
        self.ref_ms = ref_ms
        self.a, self.b, self.dual_lr, self.margin = a, b, dual_lr, margin
        self.register_buffer("lam", torch.full((len(self.models),), float(lam)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        key = prefix + "lam"
        if key in state_dict and state_dict[key].dim() == 0:  # a checkpoint from before several targets
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def expected(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``E[T]`` on the primary target (0-dim)."""
        return self.model.expected(probs)

    def expected_all(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``E[T_j]`` on every target, shape ``(targets,)``."""
        return torch.stack([m.expected(probs) for m in self.models])

    def cost(self, loss: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, loss: torch.Tensor, probs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        t = self.expected_all(probs).to(loss.dtype)  # (targets,)
        out = self.cost(loss, t)
        metrics = {"expected_latency_ms": float(t[0].detach()), "lambda": float(self.lam[0])}
        for j in range(1, len(self.models)):  # the other targets: suffix _t1, _t2, ... (their order in the config)
            metrics.update({f"expected_latency_ms_t{j}": float(t[j].detach()), f"lambda_t{j}": float(self.lam[j])})
        self.after_step(t.detach().double())
        return out, metrics

    def after_step(self, t: torch.Tensor) -> None:
        """Update internal state after one architecture step (dual ascent for ``budget``); ``t``: ``E[T_j]``."""


@HW_LOSSES.register("mul")
class MulTerm(HardwareTerm):
    name = "mul"

    def cost(self, loss, t):
        return loss * self.a * torch.log(t[0] / 1e-3).clamp_min(1e-6) ** self.b


@HW_LOSSES.register("add")
class AddTerm(HardwareTerm):
    name = "add"

    def cost(self, loss, t):
        return loss + float(self.lam[0]) * t[0] / self.ref_ms


@HW_LOSSES.register("budget")
class BudgetTerm(HardwareTerm):
    name = "budget"

    def cost(self, loss, t):
        budgets = torch.tensor(self.targets_ms, dtype=t.dtype, device=t.device)
        return loss + (self.lam.to(t.dtype, copy=True) * (t / budgets - 1.0)).sum()  # a copy: after_step updates lam

    def after_step(self, t: torch.Tensor) -> None:
        budgets = torch.tensor(self.targets_ms, dtype=torch.float64, device=t.device)
        violation = t / (budgets * (1.0 - self.margin)) - 1.0
        self.lam.copy_((self.lam.double() + self.dual_lr * violation).clamp_min(0.0))


def make_hardware_term(models: LatencyModel | Sequence[LatencyModel], kind: str | None, *,
                       target_ms: float | Sequence[float] | None = None, lam: float | None = None, a: float, b: float,
                       dual_lr: float, margin: float) -> HardwareTerm:
    """Build the hardware term ``kind`` (mul, add, budget; None = budget if a target is given, else mul).

    Args:
        models: the latency model giving ``E[T]``, or one per target (primary first).
        kind: the form (see the module docstring).
        target_ms: the budget ``T`` (budget; also ``T_ref`` of add when given), or one per model.
        lam: add: the weight; budget: the start of every multiplier (None: 0.1 for add, 0 for budget).
        a, b: mul's factor and exponent (SearchConfig ``fbnet_a``, ``fbnet_b``).
        dual_lr, margin: budget's dual-ascent step and budget tightening (``dual_lr``, ``dual_margin``).

    Raises:
        ConfigError: ``budget`` without a target, a target that is not a finite number > 0, or several
            targets with ``mul``/``add`` (only ``budget`` keeps several latencies in check).
    """
    models = [models] if isinstance(models, LatencyModel) else list(models)
    budgets = list(target_ms) if isinstance(target_ms, Sequence) else [target_ms] * len(models)
    primary = budgets[0]
    kind = kind or ("budget" if primary is not None else "mul")
    for t in budgets:
        if t is not None and not (math.isfinite(t) and t > 0):
            raise ConfigError(f"--target-ms must be > 0, got {t}")
    if kind == "budget" and any(t is None for t in budgets):
        raise ConfigError("--hw-loss budget needs --target-ms (the latency budget in ms)")
    if len(models) > 1 and kind != "budget":
        raise ConfigError(f"--hw-loss {kind} weighs one latency; several --target devices need --hw-loss budget "
                          "(or leave --hw-loss out)")
    lo, hi = models[0].min_latency()[1], models[0].max_latency()[1]
    ref = primary if primary is not None else math.sqrt(lo * hi)
    default_lam = 0.0 if kind == "budget" else 0.1
    return HW_LOSSES.get(kind)(models, targets_ms=budgets, ref_ms=ref, lam=default_lam if lam is None else lam,
                               a=a, b=b, dual_lr=dual_lr, margin=margin)


def table_path(cfg, space) -> str | None:
    """The latency table a hardware-aware search uses: ``cfg.latency_table``, else the table found for this
    machine (fingerprint, completeness and a timing probe: ``hwnas.latency.find_table``); None for
    accuracy-only searches. A sweep's driver calls this once and hands the path to every shard, so shards
    never probe while others train.

    Raises:
        ConfigError: hardware-aware search asked for, but no table given or found for this machine.
    """
    if not cfg.hardware_aware:
        return None
    from ..latency import default_table_path, find_table
    from ..latency.store import resolve_table
    from ..latency.table import check_precision, read_table

    if cfg.latency_table is not None:  # a path, or a device name with a table of this space
        path = resolve_table(cfg.latency_table, space.name, precision=cfg.precision)
        check_precision(read_table(path), cfg.precision, path)  # an int8 table never serves fp32, nor vice versa
        return str(path)

    path = find_table(space.name, precision=cfg.precision)  # <space>.json, or <space>.int8.json for int8
    if path is None:
        int8 = " --precision int8" if cfg.precision == "int8" else ""
        raise ConfigError(f"a latency budget or hardware loss needs an {cfg.precision} latency table for {space.name}, "
                          f"and none shipped with hwnas matches this machine; measure one with `hwnas profile "
                          f"--space {space.name} --device mydevice{int8}` and pass --latency-table "
                          f"{default_table_path(space.name, 'mydevice', precision=cfg.precision)}")
    return str(path)


def load_latency_model(cfg, space) -> tuple[LatencyModel | None, str | None]:
    """The latency model of ``table_path(cfg, space)`` and its path; (None, None) for accuracy-only searches."""
    path = table_path(cfg, space)
    return (LatencyModel.load(path, space, precision=cfg.precision), path) if path is not None else (None, None)
