"""Derivation: the k most probable archs, optionally under a latency budget (exact).

Maximise ``sum_l log p_l(x_l)`` subject to ``T(x) = c0 + sum_u W_u[x_u] <= budget``. Labels linked by
shared latency units form components (seed-cnn: one component of all six labels; mbconv: one per
block). Each component is enumerated into options ``(latency, log-prob, values)``; a dynamic programme
over components keeps only the k-Pareto frontier of partial assignments: a partial state is dropped
only when k other kept states have latency <= and log-prob >= its own. That is exact: the remaining
components add the same options to every state, so each completion of a dropped state is matched or
beaten by the same completion of those k states, which are k distinct archs. k=1 is the plain Pareto
frontier (lower latency, higher log-prob) and stays small.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping

import torch

from ..errors import HwnasError
from ..latency import LatencyModel
from ..space import Arch

MAX_COMPONENT = 2_000_000
EPS = 1e-12  # log-probs and latencies closer than this count as ties

State = tuple[float, float, dict]


class BudgetError(HwnasError):
    """No arch of the space meets the latency budget on this table."""


def _options(model: LatencyModel, labs: list[str], units: list[int],
             logp: Mapping[str, list[float]]) -> list[State]:
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


def _frontier(states: list[State], limit: float, k: int) -> list[State]:
    """The states within ``limit`` that fewer than ``k`` kept states dominate (latency <=, log-prob >=).

    Scanned by latency then -log-prob (a stable sort: ties keep their deterministic order); ``top`` is a
    min-heap of the k best log-probs kept so far, so a state stays iff it beats the k-th of them.
    """
    states = sorted((s for s in states if s[0] <= limit + EPS), key=lambda s: (s[0], -s[1]))
    kept: list[State] = []
    top: list[float] = []
    for s in states:
        if len(top) < k or s[1] > top[0] + EPS:
            kept.append(s)
            if len(top) < k:
                heapq.heappush(top, s[1])
            else:
                heapq.heapreplace(top, s[1])  # the old k-th best leaves the top k
    return kept


def derive_k(model: LatencyModel, probs: Mapping[str, torch.Tensor], budget_ms: float | None = None, k: int = 1, *,
             allowed: Mapping[str, torch.Tensor] | None = None) -> list[tuple[Arch, float, float]]:
    """The ``k`` most probable distinct archs whose predicted latency is ``<= budget_ms`` (any if None).

    ``allowed`` (label -> bool mask) restricts the search to a sub-space. Ties in log-prob are ordered by
    latency, then by the values' repr, so the result is reproducible.

    Returns:
        ``[(arch, predicted latency in ms, log-prob), ...]``, best first; fewer than ``k`` when fewer
        archs meet the budget.

    Raises:
        ValueError: ``k`` is not an int >= 1.
        BudgetError: no arch meets the budget; the message gives the fastest reachable latency.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"derive_k: k must be an int >= 1, got {k!r}")
    space = model.space
    logp = {lab: torch.log(p.detach().double().clamp_min(1e-30)) for lab, p in probs.items()}
    for lab, keep in (allowed or {}).items():  # outside a shard's sub-space: never chosen, whatever the budget
        logp[lab] = logp[lab].masked_fill(~keep.cpu(), -math.inf)
    logp = {lab: v.tolist() for lab, v in logp.items()}
    tensors = model.unit_tensors()
    const = model.c0 + sum(float(w) for ul, w in tensors if not ul)
    limit = math.inf if budget_ms is None else budget_ms - const
    states: list[State] = [(0.0, 0.0, {})]
    for labs, units in model.components():
        opts = [o for o in _options(model, labs, units, logp) if o[1] > -math.inf]
        states = _frontier([(a[0] + b[0], a[1] + b[1], {**a[2], **b[2]}) for a in states for b in opts], limit, k)
        if not states:
            fast, t = model.min_latency()
            if allowed:
                keep = {lab: [v for v, m in zip(space.choice(lab).values, mask.tolist(), strict=True) if m]
                        for lab, mask in allowed.items()}
                raise BudgetError(f"no arch of the sub-space {keep} meets {budget_ms:.4f} ms on this latency table "
                                  f"(the whole space reaches {t:.4f} ms); use fewer --shards-per-target or a "
                                  "larger budget")
            raise BudgetError(f"no arch of space {space.name!r} meets {budget_ms:.4f} ms on this latency table: the "
                              f"fastest predicted is {t:.4f} ms ({fast}); raise --target-ms to at least {t:.4f}")
    best = heapq.nsmallest(k, states, key=lambda s: (-s[1], s[0], repr(sorted(s[2].items()))))
    out = []
    for _, lp, values in best:
        arch = space.validate(values)
        out.append((arch, model.predict(arch), lp))
    return out


def derive(model: LatencyModel, probs: Mapping[str, torch.Tensor], budget_ms: float | None = None, *,
           allowed: Mapping[str, torch.Tensor] | None = None) -> tuple[Arch, float]:
    """The most probable arch whose predicted latency is ``<= budget_ms`` (any latency if None).

    ``allowed`` (label -> bool mask) restricts the search to a sub-space.

    Returns:
        ``(arch, predicted latency in ms)``.

    Raises:
        BudgetError: no arch meets the budget; the message gives the fastest reachable latency.
    """
    arch, predicted, _ = derive_k(model, probs, budget_ms, 1, allowed=allowed)[0]
    return arch, predicted
