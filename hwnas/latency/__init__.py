"""Latency: onnxruntime measurement, tables with provenance, the differentiable predictor, device kits.

Typical use from search/export::

    from hwnas.latency import LatencyModel, find_table, measure_module
    path = find_table("seed-cnn")                    # shipped table matching this machine, or None
    model = LatencyModel.load(path)                  # checks schema, space hash, completeness, host
    model.expected(relax.probs())                    # exact E[T] (0-dim tensor, differentiable)
    model.predict(arch)                              # ms
    ms = measure_module(space.build(arch), space.input_shape, model.protocol)
"""

from __future__ import annotations

from .calibrate import calibrate_table, fit_calibration
from .devicekit import KitError, export_kit, import_results
from .measure import export_onnx, measure_module, measure_modules, measure_overhead
from .model import LatencyModel
from .profile import profile_space
from .protocol import KIT_VERSION, Protocol, Result
from .store import default_table_path, device_slug, find_table
from .table import LatencyTable, TableError, TableWarning, load_table, read_table, save_table, space_hash
from .validate import metrics, validate_table

__all__ = [
    "KIT_VERSION", "KitError", "LatencyModel", "LatencyTable", "Protocol", "Result", "TableError", "TableWarning",
    "calibrate_table", "default_table_path", "device_slug", "export_kit", "export_onnx", "find_table",
    "fit_calibration", "import_results", "load_table", "measure_module", "measure_modules", "measure_overhead",
    "metrics", "profile_space", "read_table", "save_table", "space_hash", "validate_table",
]
