"""int8 quantisation, one recipe for export and for int8 latency tables: static QDQ with onnxruntime.

``quantize_int8`` turns an fp32 ONNX file into the int8 QDQ file ``hwnas export --int8`` ships (int8 weights
per channel, uint8 activations per tensor, MinMax calibration). ``quantize_bytes`` applies the same recipe
to an in-memory model (a latency unit, a calibration or validation network) calibrated on seeded random
tensors of its input shape: the calibrated ranges set the scales, not which kernels run, so they do not
change the latency that an int8 table records.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HwnasError

RANDOM_SAMPLES = 8  # random calibration tensors per measured model (int8 tables)


class _Calibration:
    """``CalibrationDataReader`` over samples, one per call (batch 1)."""

    def __init__(self, x: np.ndarray) -> None:
        self._it = iter([{"x": np.ascontiguousarray(x[i:i + 1])} for i in range(len(x))])

    def get_next(self):
        return next(self._it, None)


def quantize_int8(onnx_path: Path, out_path: Path, calib: np.ndarray, *, source: str = "training images",
                  fix: str = "export without --int8") -> dict[str, Any]:
    """Static QDQ quantisation (int8 weights per channel, uint8 activations) calibrated on ``calib``.

    ``quant_pre_process`` (shape inference + basic optimisation) runs first when it works.

    Args:
        onnx_path: the fp32 model (input ``x``).
        out_path: where the int8 QDQ model is written.
        calib: calibration inputs ``(N, *input_shape)``, fed one at a time.
        source: what ``calib`` is, for the recorded settings.
        fix: what to do when onnxruntime cannot quantise the model (the error's second half).

    Returns:
        The settings recorded in a manifest or a latency table.

    Raises:
        HwnasError: onnxruntime cannot quantise the model.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, pre = onnx_path, out_path.with_name("_pre.onnx")
    preprocessed = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        src = pre
    except Exception:  # noqa: BLE001  pre-processing is an optimisation; quantise the plain model
        preprocessed = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(src), str(out_path), _Calibration(calib), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    except Exception as err:  # noqa: BLE001  onnxruntime raises assorted types
        raise HwnasError(f"onnxruntime could not quantise {onnx_path.name} to int8 ({err}); {fix}") from None
    finally:
        pre.unlink(missing_ok=True)
    return {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor",
            "calibration": f"MinMax on {len(calib)} {source}", "quant_pre_process": preprocessed}


def random_calibration(input_shape: Sequence[int], samples: int = RANDOM_SAMPLES, seed: int = 0) -> np.ndarray:
    """``samples`` seeded N(0, 1) tensors of one sample's shape -> ``(samples, *input_shape)`` float32."""
    return np.random.default_rng(seed).standard_normal((samples, *input_shape)).astype(np.float32)


def table_settings() -> dict[str, Any]:
    """The quantisation an int8 latency table records (``quantize_bytes``'s recipe, without quantising)."""
    return {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor",
            "calibration": f"MinMax on {RANDOM_SAMPLES} seeded N(0,1) random tensors of each measured model's "
                           "input shape (the ranges set the scales, not the kernels, so not the latency)",
            "recipe": "the one of `hwnas export --int8` (hwnas.latency.quantize.quantize_int8)"}


def quantize_bytes(onnx_bytes: bytes, input_shape: Sequence[int], name: str = "model") -> bytes:
    """``quantize_int8`` of an in-memory fp32 model, calibrated on ``random_calibration(input_shape)``.

    Args:
        onnx_bytes: serialized fp32 ``ModelProto`` with input ``x`` (batch 1).
        input_shape: one sample's shape (no batch axis).
        name: the model's name in an error message.

    Returns:
        The serialized int8 QDQ model.
    """
    with tempfile.TemporaryDirectory(prefix="hwnas-int8-") as tmp:
        src, out = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        src.write_bytes(onnx_bytes)
        quantize_int8(src, out, random_calibration(input_shape), source="random tensors",
                      fix=f"{name} cannot be timed as int8; measure this space with --precision fp32")
        return out.read_bytes()
