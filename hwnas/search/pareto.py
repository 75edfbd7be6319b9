"""Candidates and the accuracy/latency Pareto front (pure Python, no Ray: the driver and tests share it).

A candidate is a dict ``{arch, arch_id, accuracy, accuracy_kind, predicted_latency_ms,
measured_latency_ms, target_latency_ms, shard, ...}``. The front keeps candidates that no other
candidate beats on both accuracy (higher) and latency (lower; measured when known, else predicted).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

Candidate = dict[str, Any]


def latency_of(c: Candidate) -> float:
    """Measured latency when known, else predicted; inf without a latency table (the front is then the
    most accurate candidate)."""
    for key in ("measured_latency_ms", "predicted_latency_ms"):
        if c.get(key) is not None:
            return float(c[key])
    return math.inf


def pareto_front(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Non-dominated candidates, fastest first; duplicates of an arch keep their best accuracy.

    Ties are broken deterministically (latency, then -accuracy, then arch id, then shard), so the same
    candidates always give the same front whatever order they arrive in.
    """
    best: dict[str, Candidate] = {}
    for c in candidates:
        k = c["arch_id"]
        if k not in best or (c["accuracy"], -latency_of(c), str(c.get("shard"))) > (
                best[k]["accuracy"], -latency_of(best[k]), str(best[k].get("shard"))):
            best[k] = c
    ordered = sorted(best.values(), key=lambda c: (latency_of(c), -c["accuracy"], c["arch_id"], str(c.get("shard"))))
    front, top = [], float("-inf")
    for c in ordered:
        if c["accuracy"] > top:
            front.append(c)
            top = c["accuracy"]
    return front
