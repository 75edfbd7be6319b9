"""``hwnas profile``: measure every latency unit of a space into a table, resumably.

The Identity overhead is measured first, then the units in round-robin batches; after each batch the
table is written atomically, so an interrupted run loses at most the batch in flight and a rerun
continues with the keys still missing (finished entries are never measured again or dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..space import SearchSpace
from .fingerprint import mismatches
from .measure import Passthrough, to_model
from .protocol import Protocol
from .quiet import measure_batch, pinned
from .table import Entry, LatencyTable, TableError, read_table, save_table, space_hash, unit_keys


def _resume(path: Path, space: SearchSpace, device: str, protocol: Protocol, precision: str,
            here: dict | None = None) -> LatencyTable:
    """The partial table at ``path`` if it is the same measurement (on this host, or on the device whose
    fingerprint is ``here``); else a clear error (nothing written)."""
    table = read_table(path)
    again = f"pass another --out or delete {path} to start over"
    if table.precision != precision:
        raise TableError(f"{path} holds {table.precision} latencies, this run measures {precision} models; pass "
                         f"--precision {table.precision} to complete it or {again}")
    if table.space != space.name or table.space_hash != space_hash(space):
        raise TableError(f"{path} holds a table of space {table.space!r} (hash {table.space_hash}), not of "
                         f"{space.name!r} (hash {space_hash(space)}); {again}")
    if table.device.get("name") != device:
        raise TableError(f"{path} was measured as device {table.device.get('name')!r}, not {device!r}; {again}")
    why = mismatches(table, protocol.threads, here=here)
    if why:
        raise TableError(f"{path} was measured on another host ({why[0]}); {again}")
    if Protocol.from_dict(table.protocol).to_dict() != protocol.to_dict():
        raise TableError(f"{path} was measured with protocol {Protocol.from_dict(table.protocol)}, this run "
                         f"asks for {protocol}; rerun with the same --runs/--trials/--threads or {again}")
    return table


def profile_space(space: SearchSpace, out: str | Path, device: str, protocol: Protocol | None = None,
                  batch: int = 8, limit: int | None = None, progress: bool = True,
                  on_batch: Callable[[LatencyTable], None] | None = None, precision: str = "fp32"
                  ) -> LatencyTable:
    """Measure every unit of ``space`` (and the Identity overhead) into the table at ``out``.

    Args:
        space: the search space.
        out: table path; an existing partial table of the same space/device/protocol is continued.
        device: device name recorded in the table (e.g. ``device_slug()``).
        protocol: timing knobs (default ``Protocol()``).
        batch: units per round-robin batch (the table is saved after each).
        limit: stop after measuring this many new units (None: all); used to test resumption.
        progress: show a tqdm bar with ETA on stderr.
        on_batch: called with the table after each saved batch.
        precision: ``fp32``, or ``int8``: each unit is quantised as ``hwnas export --int8`` quantises a
            network (``quantize.quantize_bytes``) before it is timed; the Identity overhead stays the plain
            per-call cost (an int8 network's own Quantize/Dequantize pairs are in its units).

    Returns:
        The table as saved (complete unless ``limit`` stopped it).

    Raises:
        TableError: ``out`` is corrupted or belongs to another space, device, CPU or protocol.
    """
    protocol = protocol or Protocol()
    out = Path(out)
    table = (_resume(out, space, device, protocol, precision) if out.exists()
             else LatencyTable.new(space, device, protocol, precision=precision))
    with pinned() as core:  # one quiet core for the whole table (``quiet.py``)
        return _measure_units(space, out, table, protocol, core, batch, limit, progress, on_batch)


def _measure_units(space: SearchSpace, out: Path, table: LatencyTable, protocol: Protocol, core: int, batch: int,
                   limit: int | None, progress: bool, on_batch: Callable[[LatencyTable], None] | None
                   ) -> LatencyTable:
    if table.overhead_ms is None:
        r = measure_batch([to_model("identity", Passthrough(), space.input_shape)], protocol, core)[0]
        table.overhead_ms, table.overhead_spread = r.median_ms, r.spread
        save_table(table, out)
    keys = unit_keys(space)
    todo = [(u, v) for u in space.latency_units() for v in space.unit_entries(u) if u.key(v) not in table.entries]
    if limit is not None:
        todo = todo[:limit]
    tag = "" if table.precision == "fp32" else f" ({table.precision})"
    bar = tqdm(total=len(keys), initial=len(keys) - len(table.missing(space)), unit="unit",
               desc=f"profile {space.name}{tag}", disable=not progress, dynamic_ncols=True)
    try:
        for s in range(0, len(todo), batch):
            chunk = todo[s:s + batch]
            models = []
            for u, v in chunk:
                module, shape = space.build_unit(u, v)
                models.append(to_model(u.key(v), module, shape, table.precision))
            for m, r in zip(models, measure_batch(models, protocol, core), strict=True):
                table.entries[m.name] = Entry(r.median_ms, r.spread)
            save_table(table, out)
            bar.update(len(chunk))
            if on_batch is not None:
                on_batch(table)
    finally:
        bar.close()
    return table
