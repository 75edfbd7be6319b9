"""Elastic MBConv block: one shared set of convolutions for every ``kK_eE`` candidate of a block.

Shared: the 1x1 expand weight (sliced to ``cin*e`` outputs), the depthwise weight (largest kernel,
centre-cropped to k, sliced to the hidden width) and the 1x1 project weight (sliced to the hidden
width). Expansion 1 has no expand conv (another op type), so its depthwise conv reads the input
directly. BatchNorm is per candidate: statistics differ between kernels and widths. ``skip`` is the
identity. A mixed block (softmax, gumbel) sums its candidates weighted by the mixture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..space import ops
from ._ctx import crop
from .elastic import ELASTIC, ElasticLayer


def _bn_state(bn: nn.BatchNorm2d, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in bn.state_dict().items()}


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, training: bool) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training, bn.momentum, bn.eps)


@ELASTIC.register("MBBlock")
class ElasticMBBlock(ElasticLayer):
    def __init__(self, spec: ops.MBBlock, space, in_shapes) -> None:
        super().__init__(spec, space, in_shapes)
        (self.cin, _, _), = in_shapes
        self.values = space.choice(spec.label).values
        kinds = [ops.parse_mb(v) for v in self.values]
        conv = [k for k in kinds if k is not None]
        self.kmax = max(k for k, _ in conv)
        hmax = self.cin * max(e for _, e in conv)
        self.expand = nn.Conv2d(self.cin, hmax, 1, bias=False).weight
        self.dw = nn.Conv2d(hmax, hmax, self.kmax, groups=hmax, bias=False).weight
        self.project = nn.Conv2d(hmax, spec.out, 1, bias=False).weight
        self.bns = nn.ModuleDict()
        for v, kind in zip(self.values, kinds, strict=True):
            if kind is None:
                continue
            h = self.cin * kind[1]
            bns = [nn.BatchNorm2d(h)] if kind[1] != 1 else []
            self.bns[v] = nn.ModuleList(bns + [nn.BatchNorm2d(h), nn.BatchNorm2d(spec.out)])
        self.residual = spec.stride == 1 and self.cin == spec.out

    def candidate(self, x: torch.Tensor, value: str) -> torch.Tensor:  # (B, cin, H, W) -> (B, out, H/s, W/s)
        kind = ops.parse_mb(value)
        if kind is None:
            return x
        k, e = kind
        h = self.cin * e
        bns = list(self.bns[value])
        y = x
        if e != 1:
            y = F.relu6(_bn(F.conv2d(x, self.expand[:h]), bns.pop(0), self.training))
        y = F.conv2d(y, crop(self.dw[:h], k), stride=self.spec.stride, padding=k // 2, groups=h)
        y = F.relu6(_bn(y, bns[0], self.training))
        y = _bn(F.conv2d(y, self.project[:, :h]), bns[1], self.training)
        return x + y if self.residual else y

    def forward(self, x, ctx):
        v = ctx.fixed.get(self.spec.label)
        if v is not None:
            return self.candidate(x, v)
        w, values = ctx.soft[self.spec.label], self.values
        return sum(wi * self.candidate(x, v) for wi, v in zip(w, values, strict=True))

    def extract(self, values, in_shape):
        value = values[self.spec.label]
        kind = ops.parse_mb(value)
        if kind is None:
            return {}
        k, e = kind
        h = self.cin * e
        bns = list(self.bns[value])
        out: dict[str, torch.Tensor] = {}
        if e != 1:
            out["expand.0.weight"] = self.expand[:h]
            out.update(_bn_state(bns.pop(0), "expand.1"))
        out["dw.0.weight"] = crop(self.dw[:h], k)
        out.update(_bn_state(bns[0], "dw.1"))
        out["project.0.weight"] = self.project[:, :h]
        out.update(_bn_state(bns[1], "project.1"))
        return out


@ELASTIC.register("FixedMB")
class ElasticFixedMB(ElasticLayer):
    """A block without a choice (``ops.FixedMB``): the plain block itself, shared by every arch."""

    def __init__(self, spec: ops.FixedMB, space, in_shapes) -> None:
        super().__init__(spec, space, in_shapes)
        (shape,) = in_shapes
        self.block = spec.build({}, shape, {})

    def forward(self, x, ctx):  # (B, cin, H, W) -> (B, out, H/s, W/s)
        return self.block(x)

    def extract(self, values, in_shape):
        return dict(self.block.state_dict())
