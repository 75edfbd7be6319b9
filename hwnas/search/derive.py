"""Derivation: the k most probable archs, optionally under latency budgets on one or several targets (exact).

Maximise ``sum_l log p_l(x_l)`` subject to ``T_j(x) = c0_j + sum_u W_ju[x_u] <= budget_j`` for every target
``j`` (one table each, all of the same space; the primary target is ``j = 0``). Labels linked by shared
latency units form components (seed-cnn: one component of all six labels; mbconv: one per block). Each
component is enumerated into options ``(latency vector, log-prob, values)``; a dynamic programme over
components keeps only the k-Pareto frontier of partial assignments: a partial state is dropped when its
latencies plus the fastest the remaining components can add exceed a budget, or when k other kept states
have latency <= on every target and log-prob >= its own. That is exact: the remaining components add the
same options to every state, so each completion of a dropped state is matched or beaten (and stays within
every budget) by the same completion of those k states, which are k distinct archs. With one target, k=1
is the plain Pareto frontier (lower latency, higher log-prob) and stays small; with several, a state is a
point of the frontier over (latency on each target, log-prob), not bounded here (exact). Measured with two
synthetic tables (tests/conftest_latency.py), budgets at 30-60% of each range: mbconv (5 blocks) keeps at
most 17-336 states (k = 1-3), well under a second; proxyless (21 blocks) 2k-19k states, 4-36 s on a shared
2-core host, so a two-target proxyless search spends that per epoch in derivation.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..errors import HwnasError
from ..latency import LatencyModel
from ..space import Arch

MAX_COMPONENT = 2_000_000
EPS = 1e-12  # log-probs and latencies closer than this count as ties

Lat = tuple[float, ...]  # one latency per target, primary first
State = tuple[Lat, float, dict]


class BudgetError(HwnasError):
    """No arch of the space meets the latency budget(s) on the table(s)."""


def _options(models: Sequence[LatencyModel], labs: list[str], units: list[int],
             logp: Mapping[str, list[float]]) -> list[State]:
    """Every assignment of the linked labels ``labs``: (latency of their units per model, log-prob, values)."""
    space = models[0].space
    members = [[(tensors[i][0], tensors[i][1].numpy()) for i in units] for tensors in (m.unit_tensors() for m in models)]
    values = [space.choice(lab).values for lab in labs]
    if math.prod(len(v) for v in values) > MAX_COMPONENT:
        raise HwnasError(f"labels {labs} are linked by latency units over too many combinations to derive exactly")
    out = []
    for idx in itertools.product(*(range(len(v)) for v in values)):
        pos = dict(zip(labs, idx, strict=True))
        lat = tuple(sum(float(w[tuple(pos[lab] for lab in ul)]) for ul, w in mem) for mem in members)
        lp = sum(logp[lab][i] for lab, i in pos.items())
        out.append((lat, lp, {lab: values[k][i] for k, (lab, i) in enumerate(pos.items())}))
    return out


def _vec(x: float | Sequence[float]) -> Lat:
    return tuple(x) if isinstance(x, Sequence) else (x,)


def _frontier(states: list, limit: float | Sequence[float], k: int) -> list:
    """The states within ``limit`` (per target) that fewer than ``k`` kept states dominate (latency <= on every
    target, log-prob >=). A state's latency (and ``limit``) is a float (one target) or a tuple, one per target.

    Scanned by latency vector then -log-prob (a stable sort: ties keep their deterministic order), so a
    dominating state is scanned before the states it dominates, and every kept state is at least as fast on
    the first target as the one scanned. So the test only looks at the other targets: one target: ``top``
    is a min-heap of the k best log-probs kept so far, and a state stays iff it beats the k-th of them; two:
    ``_TopK`` (the k best log-probs kept at or under each second latency, O(k log n) a state); more: the
    kept states at least as fast on the others are counted (numpy, O(kept) a state).
    """
    lim = _vec(limit)
    states = sorted((s for s in states if all(t <= m + EPS for t, m in zip(_vec(s[0]), lim, strict=True))),
                    key=lambda s: (_vec(s[0]), -s[1]))
    kept: list = []
    top: list[float] = []
    pairs = _TopK(sorted({s[0][1] for s in states}), k) if len(lim) == 2 else None
    rest = np.empty((max(len(states), 1), max(len(lim) - 1, 0)))  # kept states' latencies on targets 1..
    lps = np.empty(max(len(states), 1))
    for s in states:
        if len(lim) == 1:
            keep = len(top) < k or s[1] > top[0] + EPS
            if keep:
                if len(top) < k:
                    heapq.heappush(top, s[1])
                else:
                    heapq.heapreplace(top, s[1])  # the old k-th best leaves the top k
        elif pairs is not None:
            best = pairs.best(s[0][1] + EPS)
            keep = len(best) < k or best[-1] < s[1] - EPS
            if keep:
                pairs.add(s[0][1], s[1])
        else:
            n = len(kept)
            dom = (lps[:n] >= s[1] - EPS) & np.all(rest[:n] <= np.asarray(s[0][1:]) + EPS, axis=1)
            keep = int(dom.sum()) < k
            if keep:
                rest[n], lps[n] = s[0][1:], s[1]
        if keep:
            kept.append(s)
    return kept


class _TopK:
    """The k largest values added at positions ``<= x``: a Fenwick tree over the sorted positions ``xs`` whose
    nodes keep their k largest values (their union holds the k largest of any prefix)."""

    def __init__(self, xs: list[float], k: int) -> None:
        self.xs, self.k = xs, k
        self.nodes: list[list[float]] = [[] for _ in range(len(xs) + 1)]

    def add(self, x: float, value: float) -> None:
        i = bisect.bisect_left(self.xs, x) + 1
        while i < len(self.nodes):
            node = self.nodes[i]
            if len(node) < self.k or value > node[-1]:
                bisect.insort(node, value, key=lambda v: -v)  # descending
                del node[self.k:]
            i += i & -i

    def best(self, x: float) -> list[float]:
        """The k largest values at positions ``<= x``, largest first."""
        i, found = bisect.bisect_right(self.xs, x), []
        while i > 0:
            found += self.nodes[i]
            i -= i & -i
        return heapq.nlargest(self.k, found)


def _names(models: Sequence[LatencyModel]) -> list[str]:
    return [str(m.table.device.get("name")) for m in models]


def _infeasible(models: Sequence[LatencyModel], budgets: Sequence[float], allowed) -> BudgetError:
    """The error for budgets no arch meets: the fastest arch possible on each target, and the fix."""
    space = models[0].space
    fastest = [m.min_latency() for m in models]
    if allowed:
        keep = {lab: [v for v, m in zip(space.choice(lab).values, mask.tolist(), strict=True) if m]
                for lab, mask in allowed.items()}
        reach = ", ".join(f"{n} {t:.4f} ms" for n, (_, t) in zip(_names(models), fastest, strict=True))
        return BudgetError(f"no arch of the sub-space {keep} meets {_budget_text(models, budgets)} on "
                           f"{'this latency table' if len(models) == 1 else 'these latency tables'} (the whole space "
                           f"reaches {reach if len(models) > 1 else f'{fastest[0][1]:.4f} ms'}); use fewer "
                           "--shards-per-target or a larger budget")
    if len(models) == 1:
        (fast, t), = fastest
        return BudgetError(f"no arch of space {space.name!r} meets {budgets[0]:.4f} ms on this latency table: the "
                           f"fastest predicted is {t:.4f} ms ({fast}); raise --target-ms to at least {t:.4f}")
    per = "; ".join(f"{n}: fastest predicted {t:.4f} ms, budget {b:.4f} ms" + (" (unreachable)" if t > b else "")
                    for n, (_, t), b in zip(_names(models), fastest, budgets, strict=True))
    return BudgetError(f"no arch of space {space.name!r} meets all {len(models)} budgets at once ({per}); raise the "
                       "budget of an unreachable target (or of any, when each is reachable alone) in its "
                       "--target DEVICE_TABLE:BUDGET_MS")


def _budget_text(models: Sequence[LatencyModel], budgets: Sequence[float]) -> str:
    if len(models) == 1:
        return f"{budgets[0]:.4f} ms"
    return ", ".join(f"{b:.4f} ms on {n}" for n, b in zip(_names(models), budgets, strict=True))


def derive_k(model: LatencyModel, probs: Mapping[str, torch.Tensor], budget_ms: float | None = None, k: int = 1, *,
             allowed: Mapping[str, torch.Tensor] | None = None,
             others: Sequence[tuple[LatencyModel, float | None]] = ()) -> list[tuple[Arch, float, float]]:
    """The ``k`` most probable distinct archs whose predicted latency is ``<= budget_ms`` (any if None) on
    ``model`` and ``<=`` each other target's budget on its model (``others``: ``(model, budget)`` pairs, tables
    of the same space).

    ``allowed`` (label -> bool mask) restricts the search to a sub-space. Ties in log-prob are ordered by
    latency, then by the values' repr, so the result is reproducible.

    Returns:
        ``[(arch, predicted latency in ms on ``model``, log-prob), ...]``, best first; fewer than ``k`` when
        fewer archs meet the budgets.

    Raises:
        ValueError: ``k`` is not an int >= 1, or a model of ``others`` is of another space.
        BudgetError: no arch meets the budgets; the message gives the fastest reachable latency per target.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"derive_k: k must be an int >= 1, got {k!r}")
    space = model.space
    models = [model, *(m for m, _ in others)]
    budgets = [math.inf if b is None else b for b in (budget_ms, *(b for _, b in others))]
    if any(m.space.name != space.name or m.space.labels != space.labels for m in models):
        raise ValueError(f"derive_k: every latency target needs a table of space {space.name!r}")
    logp = {lab: torch.log(p.detach().double().clamp_min(1e-30)) for lab, p in probs.items()}
    for lab, keep in (allowed or {}).items():  # outside a shard's sub-space: never chosen, whatever the budget
        logp[lab] = logp[lab].masked_fill(~keep.cpu(), -math.inf)
    logp = {lab: v.tolist() for lab, v in logp.items()}
    const = [m.c0 + sum(float(w) for ul, w in m.unit_tensors() if not ul) for m in models]
    comps = [[o for o in _options(models, labs, units, logp) if o[1] > -math.inf] for labs, units in model.components()]
    # the fastest each later component can add, per target: a partial state over budget - that is dropped
    floor = [[min((o[0][j] for o in opts), default=0.0) for j in range(len(models))] for opts in comps]
    states: list[State] = [(tuple(0.0 for _ in models), 0.0, {})]
    for c, opts in enumerate(comps):
        later = [sum(f[j] for f in floor[c + 1:]) for j in range(len(models))]
        limit = tuple(b - k0 - r for b, k0, r in zip(budgets, const, later, strict=True))
        joined = [(tuple(x + y for x, y in zip(a[0], b[0], strict=True)), a[1] + b[1], {**a[2], **b[2]})
                  for a in states for b in opts]
        states = _frontier(joined, limit if len(models) > 1 else limit[0], k)
        if not states:
            raise _infeasible(models, budgets, allowed)
    best = heapq.nsmallest(k, states, key=lambda s: (-s[1], s[0], repr(sorted(s[2].items()))))
    out = []
    for _, lp, values in best:
        arch = space.validate(values)
        out.append((arch, model.predict(arch), lp))
    return out


def derive(model: LatencyModel, probs: Mapping[str, torch.Tensor], budget_ms: float | None = None, *,
           allowed: Mapping[str, torch.Tensor] | None = None,
           others: Sequence[tuple[LatencyModel, float | None]] = ()) -> tuple[Arch, float]:
    """The most probable arch whose predicted latency is ``<= budget_ms`` (any latency if None), and within
    each of ``others``' budgets (``derive_k``).

    ``allowed`` (label -> bool mask) restricts the search to a sub-space.

    Returns:
        ``(arch, predicted latency in ms)``.

    Raises:
        BudgetError: no arch meets the budget; the message gives the fastest reachable latency.
    """
    arch, predicted, _ = derive_k(model, probs, budget_ms, 1, allowed=allowed, others=others)[0]
    return arch, predicted
