"""Latency targets of a search: one or several (device table, budget) pairs, the first one primary.

A search with one target is the search of ``--latency-table``/``--target-ms``. ``--target DEVICE_TABLE:BUDGET_MS``
(repeatable; config key ``latency_targets``) gives several: the hardware term keeps ``E[T_j] <= budget_j`` for
every target ``j`` with one dual variable each (``hardware.BudgetTerm``) and derivation returns the most
probable arch predicted within every budget (``derive.derive_k``). ``DEVICE_TABLE`` is a table path or a device
name (``hwnas.latency.store.resolve_table``). The primary target (the first) is what ``target_ms``,
``latency_table``, sweeps (``--targets`` sweeps its budget; the others keep theirs in every shard), the
Pareto front and the end-to-end measurement use; the others are recorded beside it (``latency_targets`` in
``arch.json``, ``candidate.json`` and ``candidates.jsonl``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..latency import LatencyModel
from ..space import SearchSpace
from .hardware import table_path

SPEC = "DEVICE_TABLE:BUDGET_MS"
EXAMPLE = "--target amd-epyc-1t:0.05 --target latency_tables/pixel1/seed-cnn.json:0.2"


def parse_target(spec: Any) -> dict[str, Any]:
    """One target as ``{"table": device name or path, "budget_ms": float > 0}``.

    Args:
        spec: ``"DEVICE_TABLE:BUDGET_MS"`` (the last ``:`` splits), or a mapping with ``table`` (or ``device``)
            and ``budget_ms``.

    Raises:
        ConfigError: anything else, or a budget that is not a finite number > 0 (one line with the fix).
    """
    if isinstance(spec, Mapping):
        table, budget = spec.get("table", spec.get("device")), spec.get("budget_ms")
        unknown = sorted(set(spec) - {"table", "device", "budget_ms"})
    elif isinstance(spec, str) and ":" in spec:
        table, budget = (s.strip() for s in spec.rsplit(":", 1))
        unknown = []
    else:
        table, budget, unknown = None, None, []
    try:
        ms = float(budget) if not isinstance(budget, bool) else math.nan
    except (TypeError, ValueError):
        ms = math.nan
    if not isinstance(table, str) or not table or unknown or not (math.isfinite(ms) and ms > 0):
        raise ConfigError(f"target {spec!r} must be {SPEC} (a latency table path or device name, a colon, a budget "
                          f"in ms > 0); e.g. {EXAMPLE}")
    return {"table": table, "budget_ms": ms}


def primary_budget(specs: Sequence[Any] | None) -> float | None:
    """The budget of the first of ``specs`` (None when there are none)."""
    return parse_target(specs[0])["budget_ms"] if isinstance(specs, list) and specs else None


def with_primary(cfg: Any, **changes: Any) -> Any:
    """``cfg`` with the primary target's ``table`` and/or ``budget_ms`` changed in ``latency_table``/``target_ms``
    and in ``latency_targets`` alike (a sweep's shard budget, the driver's resolved table)."""
    fields = {"table": "latency_table", "budget_ms": "target_ms"}
    new = {fields[k]: v for k, v in changes.items()}
    if cfg.latency_targets:
        new["latency_targets"] = [{**cfg.latency_targets[0], **changes}, *cfg.latency_targets[1:]]
    return cfg.replace(**new)


@dataclass(frozen=True)
class Target:
    """One device the searched arch must fit: its table, model and budget (None: no budget)."""

    device: str
    table: str
    budget_ms: float | None
    model: LatencyModel

    def describe(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """What records keep of this target for ``arch`` (``latency_targets`` entries)."""
        return {"device": self.device, "table": self.table, "budget_ms": self.budget_ms,
                "predicted_latency_ms": self.model.predict(arch)}


def load_targets(cfg: Any, space: SearchSpace) -> list[Target]:
    """Every target of ``cfg``, primary first (``hardware.table_path`` finds the primary table when none is
    given); empty for an accuracy-only search.

    Raises:
        ConfigError: a table that does not exist or is of another space.
    """
    from ..latency.store import resolve_table

    primary = table_path(cfg, space)
    if primary is None:
        return []
    pairs = [(primary, cfg.target_ms)]
    pairs += [(str(resolve_table(t["table"], space.name, precision=cfg.precision)), t["budget_ms"])
              for t in (cfg.latency_targets or [])[1:]]
    out = []
    for path, budget in pairs:
        model = LatencyModel.load(path, space, precision=cfg.precision)
        out.append(Target(str(model.table.device.get("name")), path, budget, model))
    seen = [t.table for t in out]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"the latency targets name the same table twice ({seen}); give each device once, e.g. "
                          f"{EXAMPLE}")
    return out


def describe_targets(targets: Sequence[Target], arch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``latency_targets`` of a record: every target's device, table, budget and prediction for ``arch``."""
    return [t.describe(arch) for t in targets]
