"""The hardware term of the architecture loss, from the exact expected latency ``E[T]``.

Three forms, chosen with ``--hw-loss`` (``budget`` is the default when ``--target-ms`` is given):

* ``mul`` (FBNet):          ``L = CE * a * log(E[T] / 1us) ** b``   (config ``fbnet_a`` 0.2, ``fbnet_b`` 0.6)
* ``add`` (ProxylessNAS):   ``L = CE + lam * E[T] / T_ref``           (config ``hw_lambda``, default 0.1)
* ``budget``:               ``L = CE + lam * (E[T] / T - 1)`` with ``lam >= 0`` adapted by dual ascent
  after every architecture step, ``lam <- max(0, lam + eta * (E[T] / (T * (1 - margin)) - 1))``:
  it grows while the expected latency is over the (slightly tightened) budget and relaxes once under
  it (``eta`` = config ``dual_lr``, ``margin`` = ``dual_margin``), so the distribution settles at the budget instead of wherever a fixed penalty puts it.

FBNet's log is taken of the latency in microseconds so that it stays positive for the sub-millisecond
networks of small spaces. Every form's gradient reaches the architecture logits exactly through
``probs()``; relaxations and latency models stay unaware of each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..latency import LatencyModel
from ..registry import Registry

HW_LOSSES: Registry[type] = Registry("hardware loss")


class HardwareTerm(nn.Module):
    """``term(loss, probs) -> (loss with the hardware cost, metrics)``; state lives in buffers so that
    it is checkpointed with the search."""

    name = "base"

    def __init__(self, model: LatencyModel, *, target_ms: float | None, ref_ms: float, lam: float,
                 a: float, b: float, dual_lr: float, margin: float) -> None:
        super().__init__()
        self.model = model
        self.target_ms, self.ref_ms = target_ms, ref_ms
        self.a, self.b, self.dual_lr, self.margin = a, b, dual_lr, margin
        self.register_buffer("lam", torch.tensor(float(lam)))

    def expected(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.model.expected(probs)

    def cost(self, loss: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, loss: torch.Tensor, probs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        t = self.expected(probs).to(loss.dtype)
        out = self.cost(loss, t)
        metrics = {"expected_latency_ms": float(t.detach()), "lambda": float(self.lam)}
        self.after_step(float(t.detach()))
        return out, metrics

    def after_step(self, t: float) -> None:
        """Update internal state after one architecture step (dual ascent for ``budget``)."""


@HW_LOSSES.register("mul")
class MulTerm(HardwareTerm):
    name = "mul"

    def cost(self, loss, t):
        return loss * self.a * torch.log(t / 1e-3).clamp_min(1e-6) ** self.b


@HW_LOSSES.register("add")
class AddTerm(HardwareTerm):
    name = "add"

    def cost(self, loss, t):
        return loss + float(self.lam) * t / self.ref_ms


@HW_LOSSES.register("budget")
class BudgetTerm(HardwareTerm):
    name = "budget"

    def cost(self, loss, t):
        return loss + float(self.lam) * (t / self.target_ms - 1.0)

    def after_step(self, t: float) -> None:
        violation = t / (self.target_ms * (1.0 - self.margin)) - 1.0
        self.lam.fill_(max(0.0, float(self.lam) + self.dual_lr * violation))


def make_hardware_term(model: LatencyModel, kind: str | None, *, target_ms: float | None = None,
                       lam: float | None = None, a: float, b: float, dual_lr: float, margin: float) -> HardwareTerm:
    """Build the hardware term ``kind`` (mul, add, budget; None = budget if a target is given, else mul).

    Args:
        model: the latency model giving ``E[T]``.
        kind: the form (see the module docstring).
        target_ms: the budget ``T`` (budget; also ``T_ref`` of add when given).
        lam: add: the weight; budget: the start of the multiplier (None: 0.1 for add, 0 for budget).
        a, b: mul's factor and exponent (SearchConfig ``fbnet_a``, ``fbnet_b``).
        dual_lr, margin: budget's dual-ascent step and budget tightening (``dual_lr``, ``dual_margin``).

    Raises:
        ConfigError: ``budget`` without a target, or a target that is not a finite number > 0.
    """
    kind = kind or ("budget" if target_ms is not None else "mul")
    if target_ms is not None and not (math.isfinite(target_ms) and target_ms > 0):
        raise ConfigError(f"--target-ms must be > 0, got {target_ms}")
    if kind == "budget" and target_ms is None:
        raise ConfigError("--hw-loss budget needs --target-ms (the latency budget in ms)")
    lo, hi = model.min_latency()[1], model.max_latency()[1]
    ref = target_ms if target_ms is not None else math.sqrt(lo * hi)
    default_lam = 0.0 if kind == "budget" else 0.1
    return HW_LOSSES.get(kind)(model, target_ms=target_ms, ref_ms=ref, lam=default_lam if lam is None else lam,
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
    if cfg.latency_table is not None:
        return cfg.latency_table
    from ..latency import default_table_path, find_table

    path = find_table(space.name)
    if path is None:
        raise ConfigError(f"a latency budget or hardware loss needs a latency table for {space.name}, and none "
                          f"shipped with hwnas matches this machine; measure one with `hwnas profile --space "
                          f"{space.name} --device mydevice` and pass --latency-table "
                          f"{default_table_path(space.name, 'mydevice')}")
    return str(path)


def load_latency_model(cfg, space) -> tuple[LatencyModel | None, str | None]:
    """The latency model of ``table_path(cfg, space)`` and its path; (None, None) for accuracy-only searches."""
    path = table_path(cfg, space)
    return (LatencyModel.load(path, space), path) if path is not None else (None, None)
