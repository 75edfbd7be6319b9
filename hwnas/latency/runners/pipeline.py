"""``hwnas profile --runner R``: a complete, calibrated and validated table of the device ``R`` reaches.

Units (and the Identity overhead), then the calibration networks, then the held-out validation networks,
all timed on that device by the runner; the table's provenance is the device's own fingerprint. Every
step resumes: finished units are in the table, finished networks in the device's job results.
"""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from typing import Any

from ..._io import write_json
from ...space import SearchSpace
from ..calibrate import calibrate_table, sample_archs
from ..measure import Passthrough, to_model
from ..profile import _resume
from ..protocol import Model, Protocol, Result
from ..table import Entry, LatencyTable, save_table, space_hash
from ..validate import validate_table
from .base import Item, Runner, arch_items, job_name
from .offline import OfflineRunner

OVERHEAD = "identity"  # the Identity model's item name (unit keys never take it)


def _unit_model(space: SearchSpace, unit: Any, values: Any, precision: str) -> Model:
    module, shape = space.build_unit(unit, values)
    return to_model(unit.key(values), module, shape, precision)


def unit_items(space: SearchSpace, table: LatencyTable, limit: int | None = None) -> list[Item]:
    """The Identity overhead (when missing) and the units the table lacks (the first ``limit`` of them)."""
    todo = [(u.key(v), partial(_unit_model, space, u, v, table.precision))
            for u in space.latency_units() for v in space.unit_entries(u) if u.key(v) not in table.entries]
    head = [] if table.overhead_ms is not None else [(OVERHEAD, partial(to_model, OVERHEAD, Passthrough(),
                                                                         space.input_shape))]
    return head + todo[:limit] if limit is not None else head + todo


def units_job(space: SearchSpace, protocol: Protocol, precision: str) -> str:
    return job_name(f"units-{space.name}-{precision}", protocol, space_hash(space))


def profile_units(runner: Runner, space: SearchSpace, out: str | Path, device: str, protocol: Protocol, *,
                  batch: int = 8, limit: int | None = None, precision: str = "fp32") -> LatencyTable:
    """``profile_space`` on ``runner``'s device: the table (saved as results arrive) with its fingerprint."""
    here = runner.fingerprint(protocol)
    out = Path(out)
    table = (_resume(out, space, device, protocol, precision, here) if out.exists()
             else LatencyTable.new(space, device, protocol, host=here, precision=precision))

    def save(rows: list[tuple[str, Result]]) -> None:
        for name, r in rows:
            if name == OVERHEAD:
                table.overhead_ms, table.overhead_spread = r.median_ms, r.spread
            else:
                table.entries[name] = Entry(r.median_ms, r.spread)
        save_table(table, out)

    items = unit_items(space, table, limit)
    if items:
        runner.measure(items, protocol, job=units_job(space, protocol, precision), batch=batch, on_results=save)
    return table


def _stage_offline(runner: OfflineRunner, space: SearchSpace, protocol: Protocol, batch: int, limit: int | None,
                   samples: int, seed: int, precision: str) -> None:
    """First trip of an offline kit: the units and the calibration networks (they need no table)."""
    empty = LatencyTable.new(space, "offline", protocol, host={}, precision=precision)
    runner.stage(unit_items(space, empty, limit), protocol, job=units_job(space, protocol, precision), batch=batch)
    if samples:
        items = arch_items(space, sample_archs(space, samples, random.Random(seed)), precision)
        job = job_name(f"calibrate-{space.name}-{precision}", protocol, [n for n, _ in items])
        runner.stage(items, protocol, job=job, batch=batch)
    raise runner.pending("the units and calibration networks")


def profile_on_device(runner: Runner, space: SearchSpace, out: str | Path, device: str, protocol: Protocol, *,
                      batch: int = 8, limit: int | None = None, calibrate: int = 64, validate: int = 200,
                      calibrate_seed: int = 0, validate_seed: int = 1, progress: bool = True,
                      precision: str = "fp32") -> tuple[LatencyTable, dict | None, dict | None]:
    """Units, calibration (``calibrate`` networks, 0: none) and validation (``validate`` held-out networks,
    0: none) on ``runner``'s device. The validation report is written beside the table as
    ``<table>.validation.json``.

    Returns:
        (table, calibration block or None, validation report or None); both None while units are missing.

    Raises:
        RunnerError: the device cannot be reached or lacks the execution provider; a dropped connection
            (rerun to resume); an offline kit waiting for its trip to the device.
    """
    if isinstance(runner, OfflineRunner) and not runner.ready():
        _stage_offline(runner, space, protocol, batch, limit, calibrate, calibrate_seed, precision)
    table = profile_units(runner, space, out, device, protocol, batch=batch, limit=limit, precision=precision)
    if table.missing(space) or table.overhead_ms is None:
        return table, None, None
    block = table.calibration
    if calibrate and not (block and block.get("seed") == calibrate_seed and block.get("n_samples") == calibrate):
        block = calibrate_table(out, calibrate, calibrate_seed, protocol, space, batch, progress, runner=runner)
    report = None
    if validate:
        report = validate_table(out, validate, validate_seed, protocol, batch, progress, runner=runner)
        write_json(validation_path(out), report)
    return table, block, report


def validation_path(table_path: str | Path) -> Path:
    """``<dir>/<space>.json`` -> ``<dir>/<space>.validation.json``."""
    p = Path(table_path)
    return p.with_name(f"{p.stem}.validation.json")
