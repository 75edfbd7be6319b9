"""ONNX files and their checks: export, checker, parity, accuracy; int8 QDQ (``quantize_int8``) lives in
``hwnas.latency.quantize`` so that int8 latency tables quantise the same way (``.ort``: ``artefacts.py``)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ..errors import HwnasError
from ..latency.quantize import quantize_int8  # the one int8 recipe, shared with int8 latency tables


def export_file(module: nn.Module, input_shape: Sequence[int], path: Path, opset: int, dynamic_batch: bool) -> None:
    """Export ``module`` (eval mode, BatchNorm folded by constant folding) to ``path``; input ``x``, output ``y``.

    The TorchScript exporter (``dynamo=False``) is used: its ``dynamic_axes`` makes a real dynamic batch axis.
    """
    module = module.eval()
    x = torch.zeros(1, *input_shape)  # (1, C, H, W)
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=opset, input_names=["x"],
                              output_names=["y"], do_constant_folding=True, dynamic_axes=axes)
    except (torch.onnx.errors.OnnxExporterError, RuntimeError, ValueError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HwnasError(f"torch could not export the network at opset {opset} ({msg}); try --opset 17") from None
    path.write_bytes(buf.getvalue())


def check_file(path: Path) -> dict:
    """``onnx.checker`` (full check) and strict shape inference; returns the op histogram of the graph.

    Raises:
        HwnasError: the file fails the checker or shape inference.
    """
    import onnx  # here, not at the top: 1.8 s of start-up that only an export needs (`hwnas --help` pays none)

    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise HwnasError(f"the exported {path.name} fails the ONNX checker ({str(err).splitlines()[0]}); "
                         "report it with the arch and --opset") from None
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return dict(sorted(ops.items()))


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads (``.onnx`` or ``.ort``)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_batches(sess: ort.InferenceSession, x: np.ndarray, batch: int) -> np.ndarray:
    """Outputs of ``sess`` for ``x`` (N, C, H, W), fed ``batch`` samples at a time -> (N, classes)."""
    outs = [sess.run(["y"], {"x": np.ascontiguousarray(x[i:i + batch])})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs)


@torch.no_grad()
def torch_outputs(module: nn.Module, x: np.ndarray) -> np.ndarray:
    return module.eval()(torch.from_numpy(x)).numpy()


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean()) if len(y) else float("nan")


__all__ = ["accuracy", "check_file", "export_file", "quantize_int8", "run_batches", "session", "torch_outputs"]
