"""The int8 file of a run searched under an int8 budget (``hwnas search --precision int8``), checked against
the int8 latency table the search used: its measured latency next to that table's prediction and the budget.

A run searched for fp32 keeps fp32's check (``model.onnx`` against the fp32 table); this one adds the same
check for ``model.int8.onnx``, the network the budget was about. With an int8 table of another device the
prediction is that device's latency and this host's timing is not compared with it (DESIGN section 5).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HwnasError
from ..latency.model import LatencyModel
from ..latency.quiet import QuietResult
from ..space import SearchSpace
from . import metadata
from ._select import Selected


@dataclass(frozen=True)
class Int8Target:
    """The int8 table of an int8 run: its latency model and its path."""

    model: LatencyModel
    path: str


def run_precision(cfg: dict[str, Any]) -> str:
    """The precision a run searched for (its ``config.yaml``; runs older than int8 search: fp32)."""
    return str(cfg.get("precision") or "fp32")


def int8_target(cfg: dict[str, Any], sel: Selected) -> Int8Target | None:
    """The int8 table an int8 run was searched with: the arch record's ``latency_table``, else the config's,
    else this machine's int8 table (``find_table(precision="int8")``); None for an fp32 run.

    Raises:
        HwnasError: an int8 run whose int8 table is gone (the message names the command that measures one).
    """
    if run_precision(cfg) != "int8":
        return None
    from ..latency.store import find_table

    space: SearchSpace = sel.space
    path = sel.entry.get("latency_table") or cfg.get("latency_table")
    if path is None or not Path(path).is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = find_table(space.name, precision="int8")
    if path is None:
        raise HwnasError(f"this run searched under an int8 budget but no int8 latency table of {space.name} is here "
                         f"to check model.int8.onnx against; measure one with `hwnas profile --space {space.name} "
                         "--precision int8` (or export without --int8)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Int8Target(LatencyModel.load(path, space, precision="int8"), str(path))


def check(target: Int8Target, sel: Selected, measured: QuietResult, threads: int, gap_limit: float
          ) -> dict[str, Any]:
    """Fields for the manifest's ``int8`` block: the int8 table's prediction, the measured latency of
    ``model.int8.onnx`` beside it (``measured_over_predicted``), and the search's budget.

    Args:
        target: ``int8_target``'s table.
        sel: the exported arch (its ``target_latency_ms`` is the budget, when it had one).
        measured: ``model.int8.onnx`` timed on this host (``timing.time_artefacts``).
        threads: the protocol's thread count (a table of another host is not compared).
        gap_limit: measured/predicted further apart than this share adds a ``latency_warning``.

    Returns:
        ``{int8_table, int8_table_device, int8_table_calibrated, predicted_latency_ms, budget_ms,
        measured_over_predicted, latency_gap, meets_budget, summary[, latency_warning, note]}``.
    """
    from ..latency.calibrate import foreign_reasons

    model = target.model
    device = model.table.device.get("name")
    pred = model.predict(sel.arch)
    budget = sel.entry.get("target_latency_ms")
    out: dict[str, Any] = {"int8_table": metadata.relative_table(target.path), "int8_table_device": device,
                           "int8_table_calibrated": model.calibrated, "predicted_latency_ms": pred,
                           "budget_ms": budget}
    foreign = foreign_reasons(model.table, threads)
    if foreign:  # another device's table: its prediction is that device's latency, nothing here compares
        out.update(measured_over_predicted=None, latency_gap=None,
                   meets_budget=None if budget is None else pred <= budget,
                   note=f"predicted for {device} by its int8 table; this host ({foreign[0]}) is not compared")
        out["summary"] = (f"predicted {pred:.4f} ms on {device} by its int8 table"
                          + (f" (budget {budget:.4f} ms, by prediction)" if budget is not None else ""))
        return out
    ratio = measured.median_ms / pred if pred > 0 else float("inf")
    out.update(measured_over_predicted=ratio, latency_gap=abs(ratio - 1),
               meets_budget=None if budget is None else measured.median_ms <= budget)
    verdict = "" if budget is None else (f"; budget {budget:.4f} ms "
                                         f"{'met' if out['meets_budget'] else 'MISSED'} when measured")
    out["summary"] = (f"measured {measured.median_ms:.4f} ms on {device}, int8 table predicts {pred:.4f} ms "
                      f"(measured/predicted {ratio:.3f}){verdict}")
    if abs(ratio - 1) > gap_limit:
        out["latency_warning"] = (f"arch {sel.arch_id}: model.int8.onnx measured {measured.median_ms:.4f} ms is "
                                  f"{abs(ratio - 1):.0%} away from the int8 table's {pred:.4f} ms "
                                  f"({out['int8_table']}); recalibrate it (`hwnas latency calibrate --table "
                                  f"{out['int8_table']}`)")
    return out
