"""Which figures a report has: their names, and for each one written its path or for each one skipped why.

Kept apart from ``plots`` (which needs matplotlib, the ``[report]`` extra) so that report.md is written
without it, every figure listed as skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FIGURE_NAMES = ("pareto", "probs", "latency", "predicted_vs_measured")  # PNG stems; plus probs-<shard key>


@dataclass
class Figures:
    """Figures written (name -> path) and figures skipped (name -> the reason, a sentence)."""

    paths: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def none_drawn(reason: str) -> Figures:
    """No figure at all, each skipped for ``reason`` (e.g. matplotlib is not installed)."""
    return Figures(skipped=dict.fromkeys(FIGURE_NAMES, reason))
