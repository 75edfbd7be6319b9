"""ORT Mobile artefacts of an export: ``.ort`` conversion per optimisation style, the reduced-build operator
config of each artefact, the style rule, and onnxruntime's mobile (NNAPI/CoreML) usability check.

Style rule (``ort_plan``): the converter's ``target_platform`` follows the target device's machine
(``amd64`` on x86-64, ``arm`` on ARM: on x86-64 only ``amd64`` keeps the NCHWc layout pass that
``model.onnx`` gets when onnxruntime loads it, which is why a portable ``.ort`` ran 1.9x slower here).
When the target device is this host, both styles (``Fixed``: every optimisation baked in; ``Runtime``:
basic ones baked, the rest saved and replayed at load with ``session.enable_saved_runtime_optimizations``)
are converted and timed, and the faster is kept. For another device nothing can be timed: ``Fixed`` (the
converter's default and onnxruntime's advice for the CPU EP) with the portable target (``arm`` for an ARM
device, else none, so no ISA-specific NCHWc kernels are baked in for a CPU hwnas never saw).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path
from typing import Any

from ..errors import HwnasError

FIXED, RUNTIME = "Fixed", "Runtime"
REPLAY = ("session.enable_saved_runtime_optimizations", "1")


def target_platform(machine: str | None) -> str | None:
    """The converter's ``target_platform`` for a device's ``machine`` (``platform.machine()``)."""
    m = (machine or "").lower()
    if m in ("x86_64", "amd64"):
        return "amd64"
    if m.startswith(("arm", "aarch")):
        return "arm"
    return None


def ort_plan(machine: str | None, this_host: bool) -> dict[str, Any]:
    """Which styles to convert and with which target platform (see the module docstring)."""
    platform = target_platform(machine)
    if this_host:
        return {"styles": [FIXED, RUNTIME], "target_platform": platform,
                "rule": "both styles converted for this device's platform and timed on it; the faster is kept"}
    portable = platform if platform == "arm" else None
    return {"styles": [FIXED], "target_platform": portable,
            "rule": ("another device: nothing can be timed there, so the converter's default style Fixed (onnxruntime's "
                     "advice for the CPU EP) with a portable target; convert with --optimization_style Runtime "
                     "yourself when the app uses NNAPI or CoreML")}


def session_config(style: str) -> list[tuple[str, str]]:
    """Session config entries a ``.ort`` of ``style`` needs at load (Runtime: replay the saved optimisations)."""
    return [REPLAY] if style == RUNTIME else []


def convert(onnx_path: Path, work: Path, style: str, platform: str | None) -> tuple[Path, Path]:
    """Convert ``onnx_path`` to ORT format in the empty folder ``work``: ``(the .ort, its operator config)``.

    The config lists the operators of the ``.ort`` (for Runtime also those the model needs when the saved
    optimisations are not replayed), as onnxruntime's converter writes it.

    Raises:
        HwnasError: onnxruntime cannot convert the model.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    work.mkdir(parents=True)
    src = work / onnx_path.name
    shutil.copyfile(onnx_path, src)
    import onnxruntime as ort

    quiet = logging.getLogger("ort_format_model.utils")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    ort.set_default_logger_severity(3)  # the NCHWc "hardware specific" warning is expected for amd64 (recorded)
    try:  # the converter prints progress; keep stdout clean for --json
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            convert_onnx_models_to_ort(src, output_dir=work, optimization_styles=[OptimizationStyle[style]],
                                       target_platform=platform)
    except Exception as err:  # noqa: BLE001  onnxruntime raises its own types
        raise HwnasError(f"onnxruntime could not convert {onnx_path.name} to ORT format ({style} style: {err}); "
                         "export without --ort or try --opset 17") from None
    finally:
        quiet.setLevel(level)
        ort.set_default_logger_severity(2)  # onnxruntime's default
    made, configs = sorted(work.glob("*.ort")), sorted(work.glob("*.config"))
    if not made or not configs:
        raise HwnasError(f"onnxruntime's ORT conversion of {onnx_path.name} wrote no .ort/.config; export without --ort")
    return made[0], configs[0]


def config_name(ort_name: str) -> str:
    """``model.ort`` -> ``model.required_operators.config`` (one config per artefact)."""
    return f"{Path(ort_name).stem}.required_operators.config"


def rewrite_config(src: Path, dst: Path, ort_name: str) -> dict[str, list[str]]:
    """Copy the converter's config to ``dst`` with a header naming only ``ort_name`` (no temp path); returns
    its operators as ``{"domain;opset": [op, ...]}``."""
    body = [line for line in src.read_text().splitlines() if line.strip() and not line.startswith("#")]
    dst.write_text("\n".join(["# Generated from model/s:", f"# - {ort_name}", *body]) + "\n")
    return operators(dst)


def operators(config: Path) -> dict[str, list[str]]:
    """``{"domain;opset": [op, ...]}`` of a reduced-build config (``domain;opset;Op1,Op2`` lines)."""
    out: dict[str, list[str]] = {}
    for line in config.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            domain, opset, ops = line.split(";", 2)
            out[f"{domain};{opset}"] = sorted(op.split("{")[0] for op in ops.split(",") if op)
    return out


# ---- mobile usability (NNAPI / CoreML) -----------------------------------------------------------------
def _partition(info: Any) -> dict[str, Any]:
    return {"nodes": info.num_nodes, "supported_nodes": info.num_supported_nodes, "partitions": info.num_partitions,
            "unsupported_ops": sorted(info.unsupported_ops), "suitability": info.suitability().name}


def mobile_usability(onnx_path: Path) -> dict[str, Any]:
    """onnxruntime's mobile usability check (``check_onnx_model_mobile_usability``) of ``onnx_path``, as data.

    Runs the checker's own steps (basic optimisation, shape inference, NNAPI and CoreML partitioning with
    their published supported-op lists) without its logging. ``suitability`` per EP: YES / MAYBE / NO
    (onnxruntime's rule: one partition covering > 75% of the nodes is YES).
    """
    import tempfile

    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / onnx_path.name
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            optimize_model(onnx_path, opt)
            model = ModelProtoWithShapeInfo(opt).model_with_shape_info
        dynamic, _ = uc.check_shapes(model.graph)
        checks = {"nnapi": lambda fixed: uc.check_nnapi_partitions(model, fixed),
                  "coreml_neuralnetwork": lambda fixed: uc.check_coreml_partitions(
                      model, fixed, "coreml_supported_neuralnetwork_ops.md"),
                  "coreml_mlprogram": lambda fixed: uc.check_coreml_partitions(
                      model, fixed, "coreml_supported_mlprogram_ops.md")}
        out: dict[str, Any] = {"tool": "onnxruntime.tools.check_onnx_model_mobile_usability (usability_checker)",
                               "dynamic_inputs": [v.name for v in dynamic]}
        for name, check in checks.items():
            out[name] = _partition(check(True))
            if dynamic:
                out[name]["suitability_with_fixed_shapes"] = check(False).suitability().name
    try_eps = any(out[n]["suitability"] != "NO" for n in checks)
    out["recommendation"] = ("compare NNAPI (Android) / CoreML (iOS) against the CPU EP on the device" if try_eps
                             else "use the CPU EP (XNNPACK optional): NNAPI/CoreML would cover too little of the graph")
    return out
