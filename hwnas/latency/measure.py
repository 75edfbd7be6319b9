"""Measure ``nn.Module``s with onnxruntime: export to ONNX in memory, then time with the protocol.

The one place where search, export, calibration and validation get a measured latency:
``measure_module(module, input_shape)`` (one model) and ``measure_modules([...])`` (a round-robin batch).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import HwnasError
from .protocol import Model, Protocol, ProtocolError, Result, measure_models

OPSET = 17


class Passthrough(nn.Module):
    """``y = x``: the model whose latency is the per-call overhead of onnxruntime (one Identity node)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def export_onnx(module: nn.Module, input_shape: Sequence[int], opset: int = OPSET) -> bytes:
    """Export ``module`` (eval mode, batch 1, fixed shapes) to ONNX bytes with the TorchScript exporter.

    Args:
        module: a plain module; it is put in eval mode (BatchNorm folds, Dropout vanishes).
        input_shape: ``(C, H, W)`` or ``(F,)`` of one sample; the batch axis 1 is prepended.
        opset: ONNX opset (pinned, 17 by default).

    Returns:
        The serialized ``ModelProto`` with input ``x`` and output ``y``.
    """
    module = module.eval()
    x = torch.randn(1, *input_shape)  # (1, *input_shape)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["y"], do_constant_folding=True)
    return buf.getvalue()


def to_model(name: str, module: nn.Module, input_shape: Sequence[int], precision: str = "fp32") -> Model:
    """A protocol ``Model`` (name, ONNX bytes, batch-1 input shape) for ``module``.

    ``precision`` ``int8``: the ONNX model is quantised as ``hwnas export --int8`` quantises a network
    (``quantize.quantize_bytes``: static QDQ, calibrated on random tensors of ``input_shape``).
    """
    onnx_bytes = export_onnx(module, input_shape)
    if precision == "int8":
        from .quantize import quantize_bytes

        onnx_bytes = quantize_bytes(onnx_bytes, input_shape, name)
    elif precision != "fp32":
        raise HwnasError(f"precision must be fp32 or int8, got {precision!r}")
    return Model(name, onnx_bytes, (1, *input_shape))


def _protocol(protocol: Protocol | None) -> Protocol:
    return protocol if protocol is not None else Protocol()


def measure_modules(modules: Sequence[tuple[nn.Module, Sequence[int]]], protocol: Protocol | None = None,
                    ) -> list[Result]:
    """Time several modules end to end, round-robin (see ``protocol.measure_models``).

    Args:
        modules: ``(module, input_shape)`` pairs; input shapes exclude the batch axis.
        protocol: timing knobs (default ``Protocol()``: 200 runs x 5 trials, 1 thread, ORT_ENABLE_ALL).

    Returns:
        One ``Result`` per module: ``median_ms`` (median of trial medians), ``spread``, trials.

    Raises:
        HwnasError: when onnxruntime cannot run a model with these settings.
    """
    models = [to_model(f"m{i}", m, s) for i, (m, s) in enumerate(modules)]
    return measure_onnx(models, protocol)


def measure_onnx(models: Sequence[Model], protocol: Protocol | None = None) -> list[Result]:
    """Time already exported models (``Model(name, onnx_bytes, batch-1 shape)``) with the protocol."""
    try:
        return measure_models(models, _protocol(protocol))
    except ProtocolError as err:
        raise HwnasError(str(err)) from None
    except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidArgument, ...)
        if type(err).__module__.startswith("onnxruntime"):
            raise HwnasError(f"onnxruntime could not run the model: {err}; check the provider and thread "
                             "settings") from None
        raise


def measure_module(module: nn.Module, input_shape: Sequence[int], protocol: Protocol | None = None) -> float:
    """Measured end-to-end latency of ``module`` in ms (median of trial medians, one call = batch 1).

    Args:
        module: plain network, e.g. ``space.build(arch)``.
        input_shape: ``(C, H, W)`` of one sample, e.g. ``space.input_shape``.
        protocol: timing knobs (default ``Protocol()``).

    Returns:
        Latency in milliseconds; it includes the per-call overhead once, as a deployed model pays it.
    """
    return measure_modules([(module, input_shape)], protocol)[0].median_ms


def measure_overhead(input_shape: Sequence[int], protocol: Protocol | None = None) -> Result:
    """Per-call overhead: the latency of an Identity model with this input shape."""
    return measure_modules([(Passthrough(), input_shape)], protocol)[0]
