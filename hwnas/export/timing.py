"""Every artefact of an export timed side by side on the quiet path, the ``.ort`` style chosen, and the
latency each file may carry for the target device.

Provenance (DESIGN section 5): a number taken here is the device's ``measured`` latency only when the
table's device is this host (or there is no table: then it names no device). For another device's table
the latency is the table's prediction, which exists for ``model.onnx`` only (the table times fp32 ONNX
models at the deployment optimisation level); the other files get none for that device, and this host's
timing of the ONNX files stays apart, outside the latency entries (the artefact's ``host_latency_ms``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..latency.protocol import Model, Protocol
from ..latency.quiet import QuietResult, measure_quietly
from . import artefacts


def time_artefacts(folder: Path, onnx_files: list[str], ort_cands: dict[tuple[str, str], Path],
                   proto: Protocol, shape: tuple[int, ...], *, probe_ms: float | None, this_host: bool
                   ) -> dict[str, QuietResult]:
    """Time the ONNX files (always: this host's own timing is recorded in any case) and, when the target
    device is this host, every ``.ort`` candidate, in one round-robin batch on one quiet core.

    Returns:
        ``{"model.onnx": result, ..., "model.onnx:Fixed": result, ...}``.
    """
    models = [Model(name, (folder / name).read_bytes(), shape) for name in onnx_files]
    if this_host:
        models += [Model(f"{name}:{style}", path.read_bytes(), shape, tuple(artefacts.session_config(style)))
                   for (name, style), path in ort_cands.items()]
    results = measure_quietly(models, proto, probe_ms=probe_ms)
    return {m.name: r for m, r in zip(models, results, strict=True)}


def _measured(r: QuietResult, device: str | None) -> dict[str, Any]:
    return {"latency_ms": r.median_ms, "source": "measured", "device": device, "spread": round(r.spread, 5),
            "noisy": r.noisy}


def ort_choice(name: str, plan: dict[str, Any], timed: dict[str, QuietResult], device: str | None
               ) -> dict[str, Any]:
    """The style kept for the ``.ort`` of ``name`` and why: the faster measured one, else the plan's rule."""
    cands = {s: timed[f"{name}:{s}"] for s in plan["styles"] if f"{name}:{s}" in timed}
    where = device or "this host"
    if len(cands) == len(plan["styles"]) > 1:
        chosen = min(cands, key=lambda s: cands[s].median_ms)
        others = ", ".join(f"{s} {r.median_ms:.4f} ms" for s, r in cands.items() if s != chosen)
        reason = (f"{chosen} is faster: {cands[chosen].median_ms:.4f} ms vs {others}, measured side by side on "
                  f"{where}")
    else:
        chosen, reason = plan["styles"][0], plan["rule"]
    return {"rule": plan["rule"], "target_platform": plan["target_platform"], "chosen": chosen, "reason": reason,
            "candidates": {s: _measured(r, device) for s, r in cands.items()}}


def latency_entries(files: dict[str, str], timed: dict[str, QuietResult], device: dict[str, Any],
                    predicted: float | None) -> dict[str, dict[str, Any]]:
    """Latency per artefact for the target device: ``{file: {latency_ms, source, device, ...}}``.

    Args:
        files: artefact file -> the key of its timing in ``timed`` (``model.ort`` -> ``model.onnx:Fixed``).
        timed: ``time_artefacts``'s results.
        device: ``metadata.device`` (``name``, ``this_host``).
        predicted: the table's prediction for the arch (fp32 ``model.onnx``), or None.
    """
    name, out = device.get("name"), {}
    for file, key in files.items():
        if device["this_host"]:
            entry = _measured(timed[key], name)
            if file == "model.onnx" and predicted is not None:
                entry["predicted_ms"] = predicted
        elif file == "model.onnx":
            entry = {"latency_ms": predicted, "source": "predicted", "device": name,
                     "note": f"predicted by the table of {name}; not measured there"}
        else:
            entry = {"latency_ms": None, "source": None, "device": name,
                     "note": (f"the table of {name} predicts model.onnx only (fp32 ONNX, ORT_ENABLE_ALL); time "
                              f"{file} on {name} (hwnas devicekit) for its latency")}
        out[file] = entry
    return out
