"""Device kits: measure a space's units on a phone or board that only has Python, numpy and onnxruntime.

``export_kit`` writes, into one folder::

    manifest.json    kit version, space, space hash, protocol, unit key -> {file, input_shape}
    identity.onnx    the per-call overhead model
    units/NNN_<unit>.onnx
    run_kit.py       the standalone runner (a verbatim copy of ``hwnas/latency/protocol.py``)
    README.txt

On the device: ``python run_kit.py --out results.json`` (resumable). Back on the host,
``import_results`` checks the kit version, space and completeness and turns the results into a table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import HwnasError
from ..space import SearchSpace, get_space
from . import protocol as _protocol
from .measure import OPSET, Passthrough, export_onnx
from .protocol import KIT_VERSION, Protocol
from .store import default_table_path
from .table import Entry, LatencyTable, hwnas_version, now, save_table, space_hash, unit_keys

README = """hwnas device kit: {space} ({units} units), kit version {version}

On the device (needs Python 3, numpy and onnxruntime; not torch, not hwnas):
    python run_kit.py --out results.json            # resumable; --runs/--trials override the protocol
Pin one core if you can (taskset -c N on Linux) and keep the device idle and cool.
Back on the host:
    hwnas devicekit import results.json --device <name>-1t
"""


class KitError(HwnasError, ValueError):
    """A kit folder or a results file that does not fit this hwnas or this space."""


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def export_kit(space: SearchSpace, out_dir: str | Path, protocol: Protocol | None = None) -> Path:
    """Write a device kit for ``space`` into ``out_dir``.

    Args:
        space: the search space whose units the kit times.
        out_dir: kit folder (created; a folder holding a kit of another space is refused).
        protocol: the protocol the runner follows by default (``Protocol()``).

    Returns:
        Path of ``manifest.json``.

    Raises:
        KitError: ``out_dir`` holds a kit of another space, or is a file.
    """
    protocol = protocol or Protocol()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise KitError(f"{out} is a file; pass a folder for the device kit")
    old = out / "manifest.json"
    if old.is_file():
        try:
            old_space = json.loads(old.read_text()).get("space")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            old_space = None
        if old_space != space.name:
            raise KitError(f"{out} already holds a device kit of space {old_space!r}; pass an empty folder")
    (out / "units").mkdir(parents=True, exist_ok=True)
    (out / "identity.onnx").write_bytes(export_onnx(Passthrough(), space.input_shape))
    units: dict[str, dict[str, Any]] = {}
    n = 0
    for u in space.latency_units():
        for values in space.unit_entries(u):
            module, shape = space.build_unit(u, values)
            name = f"units/{n:03d}_{u.name}.onnx"
            (out / name).write_bytes(export_onnx(module, shape))
            units[u.key(values)] = {"file": name, "input_shape": [1, *shape]}
            n += 1
    (out / "run_kit.py").write_text(Path(_protocol.__file__).read_text())
    (out / "README.txt").write_text(README.format(space=space.name, units=n, version=KIT_VERSION))
    manifest = {"kit_version": KIT_VERSION, "space": space.name, "space_hash": space_hash(space),
                "protocol": protocol.to_dict(), "opset": OPSET, "created": now(), "hwnas_version": hwnas_version(),
                "identity": {"file": "identity.onnx", "input_shape": [1, *space.input_shape]}, "units": units}
    _write_json(out / "manifest.json", manifest)
    return out / "manifest.json"


def read_results(path: str | Path, space: SearchSpace | None = None) -> tuple[dict[str, Any], SearchSpace]:
    """Load a ``run_kit.py`` results file and check it against this hwnas and its space.

    Raises:
        KitError: missing/invalid file, another kit version, another space (or version of it),
            missing units (the message says how to finish the run).
    """
    p = Path(path)
    if not p.is_file():
        raise KitError(f"results file {p} does not exist; run `python run_kit.py --out {p.name}` on the device")
    try:
        res = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KitError(f"results file {p} is not valid JSON ({err}); copy it again from the device") from None
    if not isinstance(res, dict) or "kit_version" not in res:
        raise KitError(f"{p} is not a device-kit results file (no kit_version)")
    if res["kit_version"] != KIT_VERSION:
        raise KitError(f"{p} comes from device kit version {res['kit_version']}, this hwnas reads version "
                       f"{KIT_VERSION}; export a new kit with `hwnas devicekit export` and run it again")
    kit_space = get_space(str(res.get("space")))
    if space is not None and space.name != kit_space.name:
        raise KitError(f"{p} holds results of space {kit_space.name!r}, not {space.name!r}")
    space = space or kit_space
    if res.get("space_hash") != space_hash(space):
        raise KitError(f"{p} was measured for another version of space {space.name!r} (hash "
                       f"{res.get('space_hash')} != {space_hash(space)}); export a new kit and run it again")
    missing = [k for k in unit_keys(space) if k not in res.get("entries", {})]
    if missing or res.get("overhead_ms") is None:
        what = repr(missing[0]) if missing else "the Identity overhead"
        raise KitError(f"{p} has no result for {what} ({len(missing)} unit(s) missing); finish the run on the "
                       "device with `python run_kit.py` (it resumes) and copy the results again")
    return res, space


def import_results(path: str | Path, device: str, out: str | Path | None = None,
                   space: SearchSpace | None = None, force: bool = False) -> tuple[LatencyTable, Path]:
    """Turn a device-kit results file into a latency table (provenance from the device's results).

    Args:
        path: results JSON written by ``run_kit.py``.
        device: device name for the table (e.g. ``pixel7-1t``).
        out: table path (default ``latency_tables/<device>/<space>.json``).
        space: expected space (default: the one the results name).
        force: overwrite an existing table at ``out``.

    Returns:
        The table and the path it was written to.

    Raises:
        KitError: see ``read_results``; ``out`` exists and ``force`` is False.
    """
    res, space = read_results(path, space)
    out = Path(out) if out is not None else default_table_path(space.name, device)
    if out.exists() and not force:
        raise KitError(f"{out} already exists; pass --force to replace it or --out another path")
    try:
        proto = Protocol.from_dict(res["protocol"])
        entries = {k: Entry(v["median_ms"], v.get("spread", 0.0)) for k, v in res["entries"].items()}
        table = LatencyTable.new(space, device, proto, source="devicekit", host=res["device"])
        table.overhead_ms, table.overhead_spread = float(res["overhead_ms"]), float(res.get("overhead_spread", 0.0))
    except (KeyError, TypeError, ValueError) as err:
        raise KitError(f"{path} has a malformed field ({err}); copy it again from the device") from None
    table.entries = {k: entries[k] for k in unit_keys(space)}
    table.created = res.get("date", now())
    save_table(table, out)
    return table, out
