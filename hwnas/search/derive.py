"""Derivation: the most probable arch, optionally under a latency budget (exact).

Maximise ``sum_l log p_l(x_l)`` subject to ``T(x) = c0 + sum_u W_u[x_u] <= budget``. Labels linked by
shared latency units form components (seed-cnn: one component of all six labels; mbconv: one per
block). Each component is enumerated into options ``(latency, log-prob, values)``; a dynamic programme
over components keeps only the Pareto frontier of partial assignments (lower latency, higher
log-prob), which is exact and stays small.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch

from ..errors import HwnasError
from ..latency import LatencyModel
from ..space import Arch

MAX_COMPONENT = 2_000_000


class BudgetError(HwnasError):
    """No arch of the space meets the latency budget on this table."""


def _options(model: LatencyModel, labs: list[str], units: list[int],
             logp: Mapping[str, list[float]]) -> list[tuple[float, float, dict]]:
    """Every assignment of the linked labels ``labs``: (latency of their units, log-prob, values)."""
    space = model.space
    tensors = model.unit_tensors()
    members = [(tensors[i][0], tensors[i][1].numpy()) for i in units]
    values = [space.choice(lab).values for lab in labs]
    if math.prod(len(v) for v in values) > MAX_COMPONENT:
        raise HwnasError(f"labels {labs} are linked by latency units over too many combinations to derive exactly")
    out = []
    for idx in itertools.product(*(range(len(v)) for v in values)):
        pos = dict(zip(labs, idx, strict=True))
        lat = sum(float(w[tuple(pos[lab] for lab in ul)]) for ul, w in members)
        lp = sum(logp[lab][i] for lab, i in pos.items())
        out.append((lat, lp, {lab: values[k][i] for k, (lab, i) in enumerate(pos.items())}))
    return out


def _frontier(states: list[tuple[float, float, dict]], limit: float) -> list[tuple[float, float, dict]]:
    states = sorted((s for s in states if s[0] <= limit + 1e-12), key=lambda s: (s[0], -s[1]))
    kept, best = [], -math.inf
    for s in states:
        if s[1] > best + 1e-12:
            kept.append(s)
            best = s[1]
    return kept


def derive(model: LatencyModel, probs: Mapping[str, torch.Tensor], budget_ms: float | None = None, *,
           allowed: Mapping[str, torch.Tensor] | None = None) -> tuple[Arch, float]:
    """The most probable arch whose predicted latency is ``<= budget_ms`` (any latency if None).

    ``allowed`` (label -> bool mask) restricts the search to a sub-space.

    Returns:
        ``(arch, predicted latency in ms)``.

    Raises:
        BudgetError: no arch meets the budget; the message gives the fastest reachable latency.
    """
    space = model.space
    logp = {lab: torch.log(p.detach().double().clamp_min(1e-30)) for lab, p in probs.items()}
    for lab, keep in (allowed or {}).items():  # outside a shard's sub-space: never chosen, whatever the budget
        logp[lab] = logp[lab].masked_fill(~keep.cpu(), -math.inf)
    logp = {lab: v.tolist() for lab, v in logp.items()}
    tensors = model.unit_tensors()
    const = model.c0 + sum(float(w) for ul, w in tensors if not ul)
    limit = math.inf if budget_ms is None else budget_ms - const
    states: list[tuple[float, float, dict]] = [(0.0, 0.0, {})]
    for labs, units in model.components():
        opts = [o for o in _options(model, labs, units, logp) if o[1] > -math.inf]
        states = _frontier([(a[0] + b[0], a[1] + b[1], {**a[2], **b[2]}) for a in states for b in opts], limit)
        if not states:
            fast, t = model.min_latency()
            if allowed:
                keep = {lab: [v for v, k in zip(space.choice(lab).values, m.tolist(), strict=True) if k]
                        for lab, m in allowed.items()}
                raise BudgetError(f"no arch of the sub-space {keep} meets {budget_ms:.4f} ms on this latency table "
                                  f"(the whole space reaches {t:.4f} ms); use fewer --shards-per-target or a "
                                  "larger budget")
            raise BudgetError(f"no arch of space {space.name!r} meets {budget_ms:.4f} ms on this latency table: the "
                              f"fastest predicted is {t:.4f} ms ({fast}); raise --target-ms to at least {t:.4f}")
    lat, _, values = max(states, key=lambda s: s[1])
    arch = space.validate(values)
    return arch, model.predict(arch)
