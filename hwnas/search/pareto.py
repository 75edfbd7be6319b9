"""Candidates and the accuracy/latency Pareto front (pure Python, no Ray: the driver and tests share it).

A candidate is a dict ``{arch, arch_id, accuracy, accuracy_kind, predicted_latency_ms,
measured_latency_ms, target_latency_ms, shard, ...}``. The front keeps candidates that no other
candidate beats on both accuracy (higher) and latency (lower; measured when known, else predicted).

With several latency targets (``--target``) the front is on the primary target (the first); a candidate's
``latency_targets`` lists every target's prediction, and reports show the others as columns
(``other_targets``, ``target_of``).

After ``hwnas finalize`` a candidate's ``accuracy`` is the mean over seeds and ``accuracy_ci`` its interval
``[lo, hi]`` (absent or None for one seed). The front then keeps an arch unless another candidate is at least
as fast and better *beyond the intervals* (the other's ``lo`` above this one's ``hi``): two archs whose
intervals overlap are not told apart, so both stay. Such a front need not rise monotonically in accuracy.
A candidate without an interval counts as the point ``[accuracy, accuracy]`` against one with an interval;
between two candidates without intervals the rule is the plain one above (see ``dominates``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..errors import HwnasError

Candidate = dict[str, Any]


def latency_of(c: Candidate) -> float:
    """Measured latency when known, else predicted; inf without a latency table (the front is then the
    most accurate candidate)."""
    for key in ("measured_latency_ms", "predicted_latency_ms"):
        if c.get(key) is not None:
            return float(c[key])
    return math.inf


def accuracy_interval(c: Candidate) -> tuple[float, float] | None:
    """The candidate's accuracy interval ``(lo, hi)`` from ``accuracy_ci`` (widened to hold ``accuracy``),
    or None when it has none (absent or None: one seed, or never finalized).

    Raises:
        HwnasError: ``accuracy_ci`` is not two finite numbers ``[lo, hi]`` with ``lo <= hi``.
    """
    ci = c.get("accuracy_ci")
    if ci is None:
        return None
    try:
        lo, hi = (float(v) for v in ci)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise HwnasError(f"candidate {c.get('arch_id', '?')} (shard {c.get('shard')}): accuracy_ci must be "
                         f"[lo, hi], two finite numbers with lo <= hi, got {ci!r}; rerun hwnas finalize")
    acc = float(c["accuracy"])
    return min(lo, acc), max(hi, acc)


def _order(c: Candidate) -> tuple[float, float, str, str]:
    """The front's order: fastest first, then most accurate, then arch id, then shard."""
    return latency_of(c), -c["accuracy"], c["arch_id"], str(c.get("shard"))


def dominates(b: Candidate, a: Candidate) -> bool:
    """Whether ``b`` keeps ``a`` (another arch) off the front.

    * Neither has an interval: ``b`` is at least as fast and at least as accurate, and comes first in the
      front's order (``latency, -accuracy, arch id, shard``): strictly better on one, or an exact tie broken
      by arch id (the plain Pareto rule, deterministic).
    * Either has one (a missing interval is the point ``[accuracy, accuracy]``): ``b`` is at least as fast
      and its interval lies entirely above ``a``'s (``lo_b > hi_a``); overlapping intervals never dominate.
    """
    if latency_of(b) > latency_of(a):
        return False
    ib, ia = accuracy_interval(b), accuracy_interval(a)
    if ib is None and ia is None:
        return b["accuracy"] >= a["accuracy"] and _order(b) < _order(a)
    lo_b = ib[0] if ib is not None else float(b["accuracy"])
    hi_a = ia[1] if ia is not None else float(a["accuracy"])
    return lo_b > hi_a


def pareto_front(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Non-dominated candidates (``dominates``), fastest first; duplicates of an arch keep their best accuracy.

    Ties are broken deterministically (latency, then -accuracy, then arch id, then shard), so the same
    candidates always give the same front whatever order they arrive in. With ``accuracy_ci`` intervals an
    arch is dropped only when another is at least as fast and its interval lies above this one's (see the
    module docstring); without intervals this is the classic front, rising in accuracy with latency.
    """
    best: dict[str, Candidate] = {}
    for c in candidates:
        k = c["arch_id"]
        if k not in best or (c["accuracy"], -latency_of(c), str(c.get("shard"))) > (
                best[k]["accuracy"], -latency_of(best[k]), str(best[k].get("shard"))):
            best[k] = c
    ordered = sorted(best.values(), key=_order)
    if not any(accuracy_interval(c) is not None for c in ordered):  # the classic sweep, O(n log n)
        front, top = [], float("-inf")
        for c in ordered:
            if c["accuracy"] > top:
                front.append(c)
                top = c["accuracy"]
        return front
    return [a for a in ordered if not any(b is not a and dominates(b, a) for b in ordered)]


def other_targets(cands: Iterable[Candidate]) -> list[str]:
    """Devices of the latency targets after the primary one (``--target``), in the order first seen."""
    out: list[str] = []
    for c in cands:
        for t in (c.get("latency_targets") or [])[1:]:
            if t["device"] not in out:
                out.append(t["device"])
    return out


def target_of(c: Candidate, device: str) -> dict[str, Any] | None:
    """Candidate ``c``'s ``latency_targets`` entry of another target ``device`` (None when it has none)."""
    return next((t for t in (c.get("latency_targets") or [])[1:] if t["device"] == device), None)
