"""Deployment export: arch -> plain module -> ONNX (+ ``.ort``, int8), checked, timed, with a manifest.

``export(run_dir, out)`` writes, atomically (temp folder next to ``out``, renamed at the end)::

    out/model.onnx  [model.int8.onnx]  [model.ort model.required_operators.config
                                         model.int8.ort model.int8.required_operators.config]
        README.md (model card, ``card.py``)  manifest.json

or, with ``arch="all"``, one such folder per Pareto entry under ``out/<arch_id>/`` plus an index
``out/manifest.json``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_json
from ..errors import HwnasError
from ..latency.protocol import Protocol
from ..run import CHECKPOINT, EXPORT_FORMAT, RunFolder, is_export
from . import _onnx, artefacts, card, int8_target, metadata
from ._select import Selected, is_arch_ref, load_module, select, select_arch
from .timing import latency_entries, ort_choice, time_artefacts

PARITY_TOLERANCE = 1e-4  # max |onnxruntime - torch| on logits, fp32, per unit of logit scale (see _export_one)
PARITY_SAMPLES = 64  # test images compared against torch
CALIBRATION_SAMPLES = 128  # training images for int8 calibration
LATENCY_GAP = 0.10  # warn when measured and predicted latency differ by more than this fraction


class LatencyGapWarning(UserWarning):
    """The exported model's measured latency is more than 10% away from the table's prediction."""


def export(run_dir: str | Path, out: str | Path, *, arch: str = "best", weights: str | Path | None = None,
           opset: int = 17, ort: bool = False, int8: bool = False, dynamic_batch: bool = False,
           latency_table: str | Path | None = None, protocol: Protocol | None = None) -> dict[str, Any]:
    """Export an arch of a search run (or an arch file / named arch) to ONNX, check it, time it and write
    ``manifest.json``.

    Args:
        run_dir: a ``hwnas search --out`` folder (single search: arch.json; sweep: pareto.json + shards/), or
            an arch outside a run: an arch JSON file or a named arch ``SPACE:NAME`` (``read_arch``), which
            needs ``weights``; it is tested on the data those weights record (``hwnas train --save``), else
            digits, and the manifest names it (``arch_source``, ``data_source``).
        out: the export folder (replaced only when the export succeeds; an existing non-export folder is
            refused).
        arch: ``best`` (arch.json, or the most accurate Pareto entry), an arch id, or ``all`` (every Pareto
            entry into ``out/<arch_id>/``).
        weights: a ``hwnas train --save`` file (``.safetensors``); default: the run's supernet weights
            (``checkpoint.safetensors``; a pickled ``checkpoint.pt`` of an older hwnas is refused, never loaded).
        opset: ONNX opset (TorchScript exporter).
        ort: also write ``model.ort`` (and ``model.int8.ort`` with ``int8``), each with its own
            ``<stem>.required_operators.config`` (ORT Mobile, reduced builds); the optimisation style follows
            ``artefacts.ort_plan`` (both styles timed when the table's device is this host).
        int8: also write ``model.int8.onnx`` (static QDQ, calibrated on training images) and compare it.
        dynamic_batch: make the batch axis of ``x``/``y`` dynamic (default: fixed batch 1).
        latency_table: table for the predicted latency (default: the shipped table matching this CPU). A
            table of another device (``calibrate.foreign_reasons``) gives the latency for that device
            (``latency_source: "predicted"``, no ``measured_latency_ms``); this host's timing is then kept
            apart under ``host_latency_ms`` and never compared with the prediction.
        protocol: timing protocol override (default: the table's protocol, else ``Protocol()``).

    Returns:
        The manifest (for ``all``: the index, with one manifest per arch under ``"exports"``).

    Raises:
        HwnasError: bad run folder, arch id, weights or checkpoint; a model that fails the ONNX checker or
            whose onnxruntime outputs differ from torch by more than the tolerance.
    """
    if not isinstance(opset, int) or not 13 <= opset <= 21:
        raise HwnasError(f"--opset {opset} is not supported; use 13..21 (17 is the default)")
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_export(out))):
        raise HwnasError(f"--out {out} exists and is not an hwnas export (its manifest.json, if any, was not written "
                         "by hwnas export); pick a new folder: --out replaces only a previous hwnas export")
    cfg, source = None, {}  # source: where an arch outside a run and its test data came from
    if is_arch_ref(run_dir):
        sel, cfg, source = select_arch(run_dir, arch, weights)
        sels = [sel]
    else:
        sels = select(run_dir, arch)
    if weights is not None and len(sels) > 1:
        raise HwnasError("--weights holds one network; use --arch ID (or best) with it, not --arch all")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the export folder is an ordinary one
    try:
        cfg = RunFolder(run_dir).read_config() if cfg is None else cfg
        data = _Data(sels[0], cfg)
        opts = dict(weights=weights, opset=opset, ort=ort, int8=int8, dynamic_batch=dynamic_batch,
                    latency_table=latency_table, protocol=protocol, source=source,
                    int8_table=int8_target.int8_target(cfg, sels[0]) if int8 else None)
        if arch == "all":
            exports = []
            for sel in sels:
                (tmp / sel.arch_id).mkdir()
                exports.append(_export_one(sel, tmp / sel.arch_id, data, **opts))
            manifest = {"format": EXPORT_FORMAT, "version": 1, "run_dir": Path(run_dir).resolve().name, "arch": "all",
                        "exports": [{"arch_id": m["arch_id"], "folder": m["arch_id"], "accuracy": m["accuracy"],
                                     "measured_latency_ms": m["measured_latency_ms"],
                                     "predicted_latency_ms": m.get("predicted_latency_ms"),
                                     "latency_source": m.get("latency_source"),
                                     "latency_device": m.get("latency_device")} for m in exports]}
            write_json(tmp / "manifest.json", manifest)
            manifest = {**manifest, "exports": exports}
        else:
            manifest = _export_one(sels[0], tmp, data, **opts)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _replace(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; a previous export at ``out`` is removed only after the move succeeds."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _Data:
    """Test and calibration images of the run's dataset (config.yaml: dataset, data_root, data_limit, seed)."""

    def __init__(self, sel: Selected, cfg: dict[str, Any]) -> None:
        from ..data import data_options
        from ..search._runtime import load_for

        self.dataset = cfg.get("dataset", "digits")
        splits = load_for(sel.space, self.dataset, cfg.get("data_root"), int(cfg.get("seed", 0)), cfg.get("data_limit"),
                          **data_options(cfg))
        self.x_test = splits.test.tensors[0].numpy().astype(np.float32)  # (N, C, H, W)
        self.y_test = splits.test.tensors[1].numpy()  # (N,)
        self.x_calib = splits.train.tensors[0][:CALIBRATION_SAMPLES].numpy().astype(np.float32)
        self.description = splits.description
        self.preprocess = metadata.preprocess(splits)
        self.labels = list(splits.class_names) or [str(k) for k in range(splits.num_classes)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _prediction(sel: Selected, latency_table: str | Path | None) -> tuple[Any, str | None, str | None]:
    """(LatencyModel or None, table path, note)."""
    from ..latency.model import LatencyModel
    from ..latency.store import find_table

    path = Path(latency_table) if latency_table is not None else find_table(sel.space.name)
    if path is None:
        return None, None, (f"no latency table of space {sel.space.name!r} matches this CPU; predicted latency "
                            "omitted (pass --latency-table PATH or run `hwnas profile`)")
    if not path.is_file():
        raise HwnasError(f"--latency-table {path} does not exist; check the path")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LatencyModel.load(path, sel.space)
    return model, str(path), None


def _foreign(lat_model: Any, proto: Protocol) -> list[str]:
    """Why the table is not this host's (empty: this host is the table's device, or there is no table)."""
    from ..latency.calibrate import foreign_reasons

    return [] if lat_model is None else foreign_reasons(lat_model.table, proto.threads)


def _foreign_latency(sel: Selected, lat_model: Any, table_path: str | None, device: str, why: list[str],
                     result: Any, proto: Protocol) -> dict[str, Any]:
    """Manifest fields for another device's table: the prediction for ``device`` is the latency; this host's
    own timing only under ``host_latency_ms`` (with the host fingerprint), never compared with it."""
    from ..latency.fingerprint import host_fingerprint

    return {"latency_source": "predicted", "latency_device": device, "measured_latency_ms": None,
            "predicted_latency_ms": lat_model.predict(sel.arch), "latency_table": metadata.relative_table(table_path),
            "latency_table_calibrated": lat_model.calibrated,
            "latency_note": (f"predicted for {device} by its table; not measured: this host is not {device} "
                             f"({why[0]}); its own timing is under host_latency_ms and is not compared"),
            "host_latency_ms": result.median_ms,
            "host_measurement": {**result.record(), "fingerprint": host_fingerprint(proto)}}


def _export_one(sel: Selected, folder: Path, data: _Data, *, weights, opset, ort, int8, dynamic_batch,
                latency_table, protocol, int8_table=None, source=None) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    from .. import __version__

    space = sel.space
    module = load_module(sel, weights)
    onnx_path = folder / "model.onnx"
    _onnx.export_file(module, space.input_shape, onnx_path, opset, dynamic_batch)
    ops = _onnx.check_file(onnx_path)
    batchnorm = ops.get("BatchNormalization", 0)

    # parity and accuracy through onnxruntime, on the test split
    sess = _onnx.session(onnx_path)
    batch = 32 if dynamic_batch else 1
    logits = _onnx.run_batches(sess, data.x_test, batch)
    n = min(PARITY_SAMPLES, len(data.x_test))
    ref = _onnx.torch_outputs(module, data.x_test[:n])
    parity = float(np.abs(logits[:n] - ref).max()) if n else 0.0
    scale = max(1.0, float(np.abs(ref).max())) if n else 1.0  # fp32 rounding grows with the logits' size
    tolerance = PARITY_TOLERANCE * scale
    if not parity <= tolerance:
        raise HwnasError(f"onnxruntime and torch outputs differ by {parity:.3g} (> tolerance {tolerance:.3g}) "
                         f"for arch {sel.arch_id}; try another --opset, and report it if it persists")
    acc = _onnx.accuracy(logits, data.y_test)

    lat_model, table_path, note = _prediction(sel, latency_table)
    proto = protocol or (lat_model.protocol if lat_model is not None else Protocol())
    foreign = _foreign(lat_model, proto)
    device = metadata.device(lat_model, table_path, foreign)
    shape1 = (1, *space.input_shape)
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT, "version": 1, "space": space.name, "space_args": space.args,
        "arch": sel.arch, "arch_id": sel.arch_id, "hparams": sel.hparams,
        "weights": _weights_label(sel, weights),
        "dataset": data.description,
        "input": {"name": "x", "shape": ["batch" if dynamic_batch else 1, *space.input_shape], "dtype": "float32",
                  "layout": "NCHW"},
        "output": {"name": "y", "shape": ["batch" if dynamic_batch else 1, space.num_classes],
                   "meaning": "logits"},
        "preprocess": data.preprocess, "labels": data.labels, "device": device,
        "dynamic_batch": dynamic_batch, "opset": opset, "exporter": "torch.onnx TorchScript (dynamo=False)",
        "ops": ops, "batchnorm_folded": batchnorm == 0,
        "parity_max_abs_err": parity, "parity_tolerance": tolerance, "parity_samples": n,
        "parity_tolerance_rule": f"{PARITY_TOLERANCE:g} x max(1, max |torch logit|) over the parity samples",
        "accuracy": acc, "accuracy_samples": len(data.y_test),
        "accuracy_kind": f"top-1 accuracy of this file through onnxruntime on the run's test split ({data.dataset})",
        "candidate_accuracy": _candidate_accuracy(sel.entry),
        **(source or {}),  # an arch outside a run: arch_source, data_source (and its accuracy_kind)
    }
    onnx_files = ["model.onnx"]
    if int8:
        q_path = folder / "model.int8.onnx"
        settings = _onnx.quantize_int8(onnx_path, q_path, data.x_calib)
        q_logits = _onnx.run_batches(_onnx.session(q_path), data.x_test, batch)
        manifest["int8"] = {"file": q_path.name, **settings, "accuracy": _onnx.accuracy(q_logits, data.y_test),
                            "accuracy_samples": len(data.y_test),
                            "agreement_with_fp32": float((q_logits.argmax(1) == logits.argmax(1)).mean())}
        onnx_files.append(q_path.name)
    for name in onnx_files:  # the .ort candidates are converted from files that already carry the metadata
        metadata.write(folder / name, metadata.props(manifest, None))

    # .ort candidates per ONNX file; timing of every artefact side by side on the quiet path
    plan = artefacts.ort_plan((device.get("fingerprint") or {}).get("machine") or _machine(), device["this_host"])
    work = folder / "_ort"
    cands = {(name, style): artefacts.convert(folder / name, work / f"{name}-{style}", style,
                                              plan["target_platform"])[0]
             for name in (onnx_files if ort else []) for style in plan["styles"]}
    overhead = lat_model.table.overhead_ms if lat_model is not None and not foreign else None
    timed = time_artefacts(folder, onnx_files, cands, proto, shape1, probe_ms=overhead,
                           this_host=device["this_host"])
    measured = timed["model.onnx"].median_ms  # on this host
    manifest["latency_protocol"] = proto.to_dict()
    if foreign:  # another device's table: its prediction is the latency; this host's timing is kept apart
        manifest.update(_foreign_latency(sel, lat_model, table_path, device["name"], foreign, timed["model.onnx"],
                                         proto))
    else:
        manifest["measured_latency_ms"] = measured
        manifest["measured_spread"] = timed["model.onnx"].record()["spread"]
        manifest["latency_source"] = "measured" if lat_model is not None else None
        manifest["latency_device"] = device["name"]
        manifest["measurement"] = timed["model.onnx"].record()
    predicted = lat_model.predict(sel.arch) if lat_model is not None else None
    if lat_model is not None and not foreign:  # the table's own device: prediction and measurement compare
        gap = abs(measured - predicted) / predicted if predicted > 0 else float("inf")
        manifest.update(predicted_latency_ms=predicted, latency_table=metadata.relative_table(table_path),
                        latency_gap=gap, latency_table_calibrated=lat_model.calibrated)
        if gap > LATENCY_GAP:
            msg = (f"arch {sel.arch_id}: measured {measured:.4f} ms is {gap:.0%} away from the predicted "
                   f"{predicted:.4f} ms (table {manifest['latency_table']}); recalibrate the table "
                   "(`hwnas latency calibrate`) or profile this device")
            manifest["latency_warning"] = msg
            warnings.warn(msg, LatencyGapWarning, stacklevel=3)
    elif lat_model is None:
        manifest["predicted_latency_ms"] = None
        manifest["latency_note"] = note
    if int8:
        _int8_latency(manifest, timed["model.int8.onnx"].median_ms, measured, foreign)
    if int8_table is not None:  # searched under an int8 budget: the int8 file against the int8 table
        manifest["int8"].update(int8_target.check(int8_table, sel, timed["model.int8.onnx"], proto.threads,
                                                  LATENCY_GAP))
        if manifest["int8"].get("latency_warning"):
            warnings.warn(manifest["int8"]["latency_warning"], LatencyGapWarning, stacklevel=3)

    # per-artefact latency, the kept .ort styles, final metadata, then the shipped .ort files
    choices = {name: ort_choice(name, plan, timed, device["name"]) for name in onnx_files if ort}
    keys = {name: name for name in onnx_files}
    keys.update({_ort_name(name): f"{name}:{c['chosen']}" for name, c in choices.items()})
    latency = latency_entries(keys, timed, device, predicted)
    if int8_table is not None and manifest["int8"].get("measured_over_predicted") is not None:
        latency["model.int8.onnx"]["predicted_ms"] = manifest["int8"]["predicted_latency_ms"]
    props = metadata.props(manifest, latency)
    for name in onnx_files:
        metadata.write(folder / name, props)
    arts = {name: {"kind": f"{'int8 QDQ' if 'int8' in name else 'fp32'} ONNX", "latency": latency[name],
                   "operators": _graph_ops(folder / name), "mobile_usability": artefacts.mobile_usability(folder / name)}
            for name in onnx_files}
    if not device["this_host"]:  # this host's own timing, apart from the device's latency
        for name in onnx_files:
            arts[name].update(host_latency_ms=timed[name].median_ms,
                              host_note=f"timed on this host, not on {device['name']}; not its latency")
    for name, choice in choices.items():
        entry = _ship_ort(folder, name, choice, work / "final", logits[:n], data.x_test[:n], batch)
        arts[entry["file"]] = {"kind": f"{'int8' if 'int8' in name else 'fp32'} ORT format", "source": name,
                               "latency": latency[entry["file"]], "operators": entry["operators"],
                               "required_operators": entry["required_operators"],
                               "optimization_style": choice["chosen"]}
        (manifest["int8"] if "int8" in name else manifest)["ort"] = entry
    shutil.rmtree(work, ignore_errors=True)
    manifest["artefacts"] = arts
    manifest["metadata_props"] = props
    manifest["versions"] = {"hwnas": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                            "onnxruntime": onnxruntime.__version__}
    (folder / "README.md").write_text(card.render(manifest))
    manifest["files"] = {f.name: {"sha256": _sha256(f), "bytes": f.stat().st_size}
                         for f in sorted(folder.iterdir()) if f.is_file()}
    write_json(folder / "manifest.json", manifest)
    return manifest


def _machine() -> str:
    import platform

    return platform.machine()


def _ort_name(onnx_name: str) -> str:
    return f"{Path(onnx_name).stem}.ort"


def _graph_ops(path: Path) -> dict[str, int]:
    import onnx

    ops: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        ops[key] = ops.get(key, 0) + 1
    return dict(sorted(ops.items()))


def _ship_ort(folder: Path, name: str, choice: dict[str, Any], work: Path, ref: np.ndarray, x: np.ndarray,
              batch: int) -> dict[str, Any]:
    """Convert ``name`` (with its final metadata) in the chosen style to ``<stem>.ort`` + its operator config,
    and compare its outputs with the ONNX file's."""
    ort_file = _ort_name(name)
    made, cfg = artefacts.convert(folder / name, work / name, choice["chosen"], choice["target_platform"])
    made.replace(folder / ort_file)
    cfg_name = artefacts.config_name(ort_file)
    ops = artefacts.rewrite_config(cfg, folder / cfg_name, ort_file)
    src_out = ref if "int8" not in name else _onnx.run_batches(_onnx.session(folder / name), x, batch)
    got = _onnx.run_batches(_onnx.session(folder / ort_file), x, batch)
    return {"file": ort_file, "source": name, "required_operators": cfg_name, "operators": ops,
            "max_abs_err_vs_onnx": float(np.abs(got - src_out).max()) if len(x) else 0.0,
            "optimization_style": choice["chosen"], "target_platform": choice["target_platform"],
            "session_config": dict(artefacts.session_config(choice["chosen"])), "style_choice": choice,
            "timed_before_metadata": "the timed candidate differs from this file only in metadata_props"}


def _int8_latency(manifest: dict[str, Any], q_ms: float, measured: float, foreign: list[str]) -> None:
    """The int8 file's timing on this host next to fp32's (kept apart from the device for a foreign table)."""
    faster = q_ms < measured
    key = "host_latency_ms" if foreign else "measured_latency_ms"  # timed here, like fp32
    manifest["int8"].update({key: q_ms, "speedup_vs_fp32": measured / q_ms if q_ms > 0 else None,
                             "faster_than_fp32": faster})
    if foreign:
        manifest["int8"]["timed_on"] = (f"this host, not {manifest['latency_device']}: the speed-up may "
                                        "differ there")
    if not faster:
        manifest["int8"]["note"] = (f"int8 is not faster than fp32 on this CPU ({q_ms:.4f} ms vs "
                                    f"{measured:.4f} ms); deploy model.onnx here")


def _weights_label(sel: Selected, weights: str | Path | None) -> str:
    """Where the weights came from, without absolute paths: the --weights file's name, or the run-relative
    checkpoint of the supernet (``RUN/shards/<key>/checkpoint.safetensors``)."""
    if weights is not None:
        return Path(weights).name
    src = sel.source
    run = src.parent.parent if src.parent.name == "shards" else src
    return f"supernet weights of {run.name}/{(src / CHECKPOINT).relative_to(run).as_posix()}"


def _candidate_accuracy(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The run's own accuracy of the arch (search or ``hwnas finalize``: mean, 95% interval, seeds), as recorded."""
    if entry.get("accuracy") is None:
        return None
    runs = entry.get("accuracy_runs")
    return {"accuracy": entry.get("accuracy"), "kind": entry.get("accuracy_kind"), "ci95": entry.get("accuracy_ci"),
            "seeds": len(runs) if isinstance(runs, list) else None, "runs": runs}

__all__ = ["PARITY_TOLERANCE", "LatencyGapWarning", "export"]
