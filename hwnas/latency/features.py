"""Per-unit features of the calibration residual, laid out like the unit's LUT tensor.

A unit timed alone pays costs at its boundary that mostly vanish inside a network: onnxruntime's
NCHWc layout pass wraps it in ``ReorderInput``/``ReorderOutput`` nodes and its output is a fresh
allocation instead of a planned buffer. Both scale with the tensors that cross the boundary, so the
feature is ``B_u[x] = (numel(input) + numel(output)) / 1e4`` of the unit, and 0 when the unit is an
identity for ``x`` (e.g. an MBConv ``skip``: nothing is computed, nothing is reordered).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..space import SearchSpace, Unit

SCALE = 1e4  # elements per feature unit


def is_identity(module: nn.Module) -> bool:
    """True when every leaf of ``module`` is an ``Identity`` or ``Dropout`` (no computation at inference)."""
    leaves = [m for m in module.modules() if not list(m.children())]
    return all(isinstance(m, (nn.Identity, nn.Dropout)) for m in leaves)


def boundary_elements(space: SearchSpace, unit: Unit) -> np.ndarray:
    """``B_u`` for every entry of ``unit``: shape ``(|V_l| for l in unit.labels)`` (0-dim without labels).

    Returns:
        ``(numel(unit input) + numel(unit output)) / 1e4`` per entry, 0 where the unit is an identity.
    """
    index = {s.name: i for i, s in enumerate(space.layers)}
    first, last = index[unit.layers[0]], index[unit.layers[-1]]
    values = []
    for entry in space.unit_entries(unit):
        arch = {c.label: entry.get(c.label, c.values[0]) for c in space.choices}
        shapes = space.shapes(arch)
        with torch.device("meta"):  # structure only: no weights are initialised
            module, _ = space.build_unit(unit, entry)
        active = not is_identity(module)
        values.append(active * (math.prod(shapes[first]) + math.prod(shapes[last + 1])) / SCALE)
    shape = tuple(len(space.choice(lab).values) for lab in unit.labels)
    return np.array(values, dtype=np.float64).reshape(shape)
