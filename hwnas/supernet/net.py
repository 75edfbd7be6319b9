"""The supernet: the space's chain of elastic layers and the forward pass over a ``Sample``.

A forward pass carries a list of *paths*. Each path has a tensor, a weight and the labels fixed on
it. Before a layer reads a label that is not yet fixed on a path:

* a hard label (single-path, or a fixed arch) is fixed on the path (its gradient estimator lives in
  the relaxation, not here);
* a soft label that changes the spatial shape at this layer (unpadded kernel size, pool size) splits
  the path into one path per value, weighted by that value's mixture weight;
* any other soft label is mixed inside the layer (channel masks, kernel masks, weighted sums).

After each layer, paths whose tensors have the same shape and agree on every fixed label that a later
layer still reads are merged into their weighted mean. This is the DARTS mixture taken at the first
point where the candidates' shapes agree; with a fixed arch there is one path and the forward equals
the plain network's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..relax.base import Hard, Sample
from ..space import Arch, SearchSpace
from ._ctx import LabelCtx
from .elastic import ELASTIC, ElasticLinear


@dataclass
class _Path:
    x: torch.Tensor
    weight: torch.Tensor | float
    fixed: dict[str, object]


class Supernet(nn.Module):
    """Weight-sharing network over every arch of ``space``.

    Args:
        space: the search space; one elastic layer is built per layer spec.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self.layers = nn.ModuleList(
            ELASTIC.get(type(spec).__name__)(spec, space, space.input_shapes(i)) for i, spec in enumerate(space.layers)
        )
        later: list[set[str]] = [set() for _ in space.layers]
        acc: set[str] = set()
        for i in range(len(space.layers) - 1, -1, -1):
            later[i] = set(acc)
            acc |= space.layers[i].labels()
        self._live_after = later
        self._values = {c.label: c.values for c in space.choices}

    def forward(self, x: torch.Tensor, sample: Sample) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        paths = [_Path(x, 1.0, {})]
        for i, (spec, layer) in enumerate(zip(self.space.layers, self.layers, strict=True)):
            paths = [q for p in paths for q in self._split(p, spec, sample)]
            out = []
            for p in paths:
                for lab in sorted(spec.labels()):
                    st = sample.choices[lab]
                    if lab not in p.fixed and isinstance(st, Hard):
                        p.fixed[lab] = self._values[lab][st.index]
                soft = {lab: st.weights for lab, st in sample.choices.items()
                        if lab not in p.fixed and not isinstance(st, Hard)}
                y = layer(p.x, LabelCtx(p.fixed, soft, self._values, sample.hparams))
                out.append(_Path(y, p.weight, p.fixed))
            paths = self._merge(out, self._live_after[i])
        (path,) = paths
        return path.x if isinstance(path.weight, float) and path.weight == 1.0 else path.x * path.weight

    def _split(self, p: _Path, spec, sample: Sample) -> list[_Path]:
        paths = [p]
        for lab in sorted(spec.shape_labels()):
            st = sample.choices[lab]
            if lab in p.fixed or isinstance(st, Hard):
                continue
            paths = [_Path(q.x, q.weight * w, {**q.fixed, lab: v})
                     for q in paths for v, w in zip(self._values[lab], st.weights, strict=True)]
        return paths

    @staticmethod
    def _merge(paths: list[_Path], live: set[str]) -> list[_Path]:
        if len(paths) == 1:
            return paths
        groups: dict[tuple, list[_Path]] = OrderedDict()
        for p in paths:
            fixed = {k: v for k, v in p.fixed.items() if k in live}
            key = (tuple(p.x.shape), tuple(sorted(fixed.items(), key=lambda kv: kv[0])))
            groups.setdefault(key, []).append(_Path(p.x, p.weight, fixed))
        merged = []
        for group in groups.values():
            if len(group) == 1:
                merged.append(group[0])
                continue
            total = sum(q.weight for q in group)
            x = sum(q.x * q.weight for q in group) / total
            merged.append(_Path(x, total, group[0].fixed))
        return merged

    @torch.no_grad()
    def extract(self, arch: Arch, hparams: dict[str, float] | None = None) -> nn.Sequential:
        """The plain network of ``arch`` (``space.build``) carrying this supernet's weights."""
        arch = self.space.validate(arch)
        plain = self.space.build(arch, hparams)
        shapes = self.space.shapes(arch)
        state: dict[str, torch.Tensor] = {}
        for i, (spec, layer) in enumerate(zip(self.space.layers, self.layers, strict=True)):
            if isinstance(layer, ElasticLinear) and layer.after_flatten:
                part = layer.extract_flat(arch, shapes[i - 1])
            else:
                part = layer.extract(arch, shapes[i])
            state.update({f"{spec.name}.{k}": v.detach().clone() for k, v in part.items()})
        plain.load_state_dict(state, strict=True)
        return plain.to(next(self.parameters()).device)
