"""The differentiable latency predictor built from a table.

Model, for an arch ``x`` (one value per label)::

    T(x) = c0 + sum_u W_u[x_u],    W_u = a_u * (LUT_u - o) + b_u * B_u

``LUT[u, x_u]`` is the measured median of unit ``u`` for the values ``x_u`` of its labels, ``o`` the
per-call overhead (Identity model; every unit measured alone paid it, an end-to-end run pays it once)
and ``B_u`` the unit's boundary elements (``features.py``: the layout reorders and output allocation a
unit pays alone but not inside a network). Uncalibrated: ``c0 = o``, ``a_u = 1``, ``b_u = 0``;
calibration (``hwnas latency calibrate``) refits ``c0``, the scales ``a_u`` and the boundary costs
``b_u`` on end-to-end measurements. Because ``T`` is a sum of per-unit terms, its expectation under
the factorised distribution ``P(x) = prod_l p_l(x_l)`` is exact and multilinear::

    E[T] = c0 + sum_u sum_{x_u} W_u[x_u] * prod_{l in labels(u)} p_l(x_l)

computed with one ``einsum`` per unit (``W_u`` has shape ``(|V_l1|, |V_l2|, ...)``), so gradients flow
exactly to whatever produced the probabilities.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..space import SearchSpace, Unit, get_space
from .features import boundary_elements
from .protocol import Protocol
from .table import LatencyTable, TableError, check_complete, load_table

MAX_JOINT = 20_000_000  # largest joint table min_latency() enumerates for units that share labels


class LatencyModel:
    """Predicted latency (ms) of archs of ``space`` from ``table``.

    Args:
        space: the search space.
        table: a complete table of that space (``load_table`` checks it).
        calibrated: use the table's calibration (``c0``, ``a_u``, ``b_u``); False gives the uncalibrated
            model ``c0 = o``, ``a_u = 1``, ``b_u = 0``.

    Raises:
        TableError: the table lacks a unit of the space (the message names it and the profile command).
    """

    def __init__(self, space: SearchSpace, table: LatencyTable, calibrated: bool = True) -> None:
        check_complete(table, space)
        self.space, self.table = space, table
        self.overhead_ms = float(table.overhead_ms or 0.0)
        cal = table.calibration if calibrated else None
        self.c0 = float(cal["c0"]) if cal else self.overhead_ms
        scales = dict(cal.get("scales", {})) if cal else {}
        boundary = dict(cal.get("boundary", {})) if cal else {}
        self.units: list[Unit] = space.latency_units()
        self.scales = {u.name: float(scales.get(u.name, 1.0)) for u in self.units}
        self.boundary = {u.name: float(boundary.get(u.name, 0.0)) for u in self.units}
        self._index = {lab: {v: i for i, v in enumerate(space.choice(lab).values)} for lab in space.labels}
        self._raw: list[np.ndarray] = []  # LUT_u, shape (|V_l| for l in unit.labels)
        for u in self.units:
            shape = tuple(len(space.choice(lab).values) for lab in u.labels)
            raw = np.array([table.entries[u.key(v)].median_ms for v in space.unit_entries(u)], dtype=np.float64)
            self._raw.append(raw.reshape(shape))
        self._terms = []
        for u, raw in zip(self.units, self._raw, strict=True):
            term = self.scales[u.name] * (raw - self.overhead_ms)
            if self.boundary[u.name]:
                term = term + self.boundary[u.name] * boundary_elements(space, u)
            self._terms.append(term)
        self._torch_cache: dict[tuple[Any, Any], list[torch.Tensor]] = {}

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace | None = None, calibrated: bool = True,
             **load_kwargs: Any) -> LatencyModel:
        """Load a table (checked with ``load_table``) and build its model.

        ``space`` may be trained at another geometry than its tables describe (``space.latency_space()``,
        e.g. ``proxyless`` at 32x32): the model predicts for the deployment geometry, with the same labels.

        Raises:
            TableError: see ``load_table``; or a calibration that predicts a negative latency for some arch.
        """
        space = space.latency_space() if space is not None else None
        table = load_table(path, space, **load_kwargs)
        model = cls(space or get_space(table.space), table, calibrated)
        if model.calibrated:
            try:
                arch, fastest = model.min_latency()
            except ValueError:  # too many joint combinations to enumerate: nothing to check cheaply
                return model
            if fastest < 0:
                raise TableError(f"latency table {path}: its calibration predicts {fastest:.4f} ms for {arch} (a "
                                 f"latency must be >= 0; c0 {model.c0:.4f}); re-run `hwnas latency calibrate "
                                 f"--table {path}`")
        return model

    @property
    def protocol(self) -> Protocol:
        """The protocol the table was measured with: measure end-to-end latencies with it to compare."""
        return Protocol.from_dict(self.table.protocol)

    @property
    def calibrated(self) -> bool:
        return (self.c0 != self.overhead_ms or any(a != 1.0 for a in self.scales.values())
                or any(self.boundary.values()))

    # ---- point predictions ------------------------------------------------------------------------
    def position(self, unit: Unit, arch: Mapping[str, Any]) -> tuple[int, ...]:
        """Index of ``arch``'s values in ``unit``'s tensors (one position per label of the unit)."""
        return tuple(self._index[lab][arch[lab]] for lab in unit.labels)

    def unit_values(self, arch: Mapping[str, Any]) -> list[float]:
        """Raw measured medians ``LUT[u, x_u]`` (ms) of each unit for ``arch``, in unit order."""
        arch = self.space.validate(arch)
        return [float(raw[self.position(u, arch)]) for u, raw in zip(self.units, self._raw, strict=True)]

    def predict(self, arch: Mapping[str, Any]) -> float:
        """``T(arch) = c0 + sum_u W_u[x_u]`` in ms. Raises ArchError for an invalid arch."""
        arch = self.space.validate(arch)
        return self.c0 + sum(float(w[self.position(u, arch)]) for u, w in zip(self.units, self._terms, strict=True))

    def additive(self, arch: Mapping[str, Any]) -> float:
        """The plain additive table ``sum_u LUT[u, x_u]`` (no overhead correction): the baseline."""
        return sum(self.unit_values(arch))

    # ---- the differentiable expectation -------------------------------------------------------------
    def unit_tensors(self, dtype: torch.dtype = torch.float64,
                     device: torch.device | str | None = None) -> list[tuple[tuple[str, ...], torch.Tensor]]:
        """``(labels, W_u)`` per unit, ``W_u = a_u (LUT_u - o) + b_u B_u`` of shape ``(|V_l| for l in labels)``.

        ``T(x) = self.c0 + sum_u W_u[x_u]``: the terms a dynamic-programming derivation minimises.
        """
        key = (dtype, str(device))
        if key not in self._torch_cache:
            self._torch_cache[key] = [torch.as_tensor(w, dtype=dtype, device=device) for w in self._terms]
        return [(u.labels, t) for u, t in zip(self.units, self._torch_cache[key], strict=True)]

    def expected(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Exact ``E[T]`` under independent per-label distributions (0-dim tensor, differentiable).

        Args:
            probs: ``label -> p_l``, a 1-D tensor over ``space.choice(label).values`` summing to 1.

        Returns:
            ``c0 + sum_u einsum(W_u, p_l1, p_l2, ...)`` with the dtype/device of the probabilities.

        Raises:
            KeyError: a label some unit depends on is missing from ``probs``.
            ValueError: a probability vector has the wrong shape.
        """
        if not probs:
            raise KeyError(f"probs is empty; it needs a distribution for each of {self.space.labels}")
        first = next(iter(probs.values()))
        total = torch.tensor(self.c0, dtype=first.dtype, device=first.device)
        for labels, w in self.unit_tensors(first.dtype, first.device):
            if not labels:
                total = total + w
                continue
            ps = []
            for lab in labels:
                if lab not in probs:
                    raise KeyError(f"probs has no distribution for label {lab!r}; it needs {self.space.labels}")
                p = probs[lab]
                if p.dim() != 1 or p.shape[0] != w.shape[len(ps)]:
                    raise ValueError(f"probs[{lab!r}] must have shape ({w.shape[len(ps)]},), got {tuple(p.shape)}")
                ps.append(p)
            idx = string.ascii_letters[:len(labels)]
            total = total + torch.einsum(f"{idx},{','.join(idx)}->", w, *ps)
        return total

    # ---- extremes ------------------------------------------------------------------------------------
    def components(self) -> list[tuple[list[str], list[int]]]:
        """Groups of labels linked by shared units, with the indices (in ``self.units``) of their units."""
        parent = {lab: lab for lab in self.space.labels}

        def find(a: str) -> str:
            while parent[a] != a:
                a = parent[a]
            return a

        for u in self.units:
            for lab in u.labels[1:]:
                parent[find(lab)] = find(u.labels[0])
        groups: dict[str, list[str]] = {}
        for lab in self.space.labels:
            groups.setdefault(find(lab), []).append(lab)
        out = []
        for labs in groups.values():
            members = [i for i, u in enumerate(self.units) if u.labels and set(u.labels) <= set(labs)]
            out.append((labs, members))
        return out

    def _extreme(self, sign: float) -> tuple[dict[str, Any], float]:
        arch: dict[str, Any] = {}
        total = self.c0 + sum(float(w) for u, w in zip(self.units, self._terms, strict=True) if not u.labels)
        for labs, members in self.components():
            sizes = [len(self.space.choice(lab).values) for lab in labs]
            if math.prod(sizes) > MAX_JOINT:
                raise ValueError(f"labels {labs} share units over {math.prod(sizes)} combinations; too many to "
                                 "enumerate")
            joint = np.zeros(sizes)
            for i in members:
                axes = [labs.index(lab) for lab in self.units[i].labels]
                shape = [sizes[a] if a in axes else 1 for a in range(len(labs))]
                order = np.argsort(axes)  # unit labels are sorted; component labels may not be
                joint = joint + np.transpose(self._terms[i], order).reshape(shape)
            flat = int(np.argmin(sign * joint))
            pos = np.unravel_index(flat, sizes)
            arch.update({lab: self.space.choice(lab).values[p] for lab, p in zip(labs, pos, strict=True)})
            total += float(joint[pos])
        return self.space.validate(arch), total

    def min_latency(self) -> tuple[dict[str, Any], float]:
        """The fastest predicted arch and its predicted latency (exact).

        Units that share no labels are minimised independently; labels linked through shared units are
        minimised jointly over their (enumerated) combinations.
        """
        return self._extreme(1.0)

    def max_latency(self) -> tuple[dict[str, Any], float]:
        """The slowest predicted arch and its predicted latency (exact, like ``min_latency``)."""
        return self._extreme(-1.0)
