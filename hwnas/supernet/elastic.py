"""Weight-sharing counterparts of the layer specs in ``hwnas.space.ops``.

Widths are elastic by slicing the largest weight (first ``c`` channels), kernel sizes by centre-crop of
the largest kernel, and a choice that changes the op type (MBConv expansion 1 vs 3/6, skip) gets its
own branch where weights cannot be shared (per-candidate BatchNorm). Every elastic layer can
``extract`` the plain layer's state dict for fixed values, which is how the supernet hands weights to
``hwnas train --inherit`` and to the exporter.

Mixtures: a soft width mixes by the expected channel mask, a soft kernel size under 'same' padding by
the expected kernel mask (conv is linear in its weight), a soft activation or MBConv choice by the
weighted sum of candidates. Choices that change the spatial shape are never soft here: the supernet
splits paths on them first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry
from ..space import ops
from ..space.ops import Ref
from ._ctx import LabelCtx, crop, kernel_mask, width_mask

ELASTIC: Registry[type] = Registry("elastic layer")


def _max(space, param) -> Any:
    return max(space.choice(param.label).values) if isinstance(param, Ref) else param


def _mix_width(y: torch.Tensor, ctx: LabelCtx, out: Any, cmax: int) -> torch.Tensor:
    """Apply the expected channel mask when the width ``out`` is mixed on this path."""
    if ctx.value(out) is not None:
        return y
    w, widths = ctx.mixture(out)
    m = width_mask(w, widths, cmax)
    return y * (m.view(1, -1, 1, 1) if y.dim() == 4 else m.view(1, -1))


class ElasticLayer(nn.Module):
    def __init__(self, spec, space, in_shapes: set[tuple[int, ...]]) -> None:
        super().__init__()
        self.spec = spec

    def extract(self, values: Mapping[str, Any], in_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return {}


@ELASTIC.register("Conv")
class ElasticConv(ElasticLayer):
    def __init__(self, spec: ops.Conv, space, in_shapes) -> None:
        super().__init__(spec, space, in_shapes)
        cin = max(s[0] for s in in_shapes)
        self.cout, self.kmax = _max(space, spec.out), _max(space, spec.k)
        conv = nn.Conv2d(cin, self.cout, self.kmax, bias=not spec.bn)  # default init of the largest conv
        self.weight = conv.weight
        self.bias = conv.bias
        self.bn = nn.BatchNorm2d(self.cout) if spec.bn else None

    def forward(self, x: torch.Tensor, ctx: LabelCtx) -> torch.Tensor:  # (B, Cin, H, W)
        spec = self.spec
        cout = ctx.value(spec.out) or self.cout
        k = ctx.value(spec.k)
        w = self.weight[:cout, : x.shape[1]]
        if k is None:  # mixed kernel under 'same' padding
            mw, ks = ctx.mixture(spec.k)
            w, k = w * kernel_mask(mw, ks, self.kmax), self.kmax
        else:
            w = crop(w, k)
        y = F.conv2d(x, w, None if self.bias is None else self.bias[:cout], spec.stride, spec.pad(k))
        if self.bn is not None:
            bn = self.bn
            y = F.batch_norm(y, bn.running_mean[:cout], bn.running_var[:cout], bn.weight[:cout], bn.bias[:cout],
                             self.training, bn.momentum, bn.eps)
        return _mix_width(y, ctx, spec.out, self.cout)

    def extract(self, values, in_shape):
        cout, k = ops.resolve(self.spec.out, values), ops.resolve(self.spec.k, values)
        w = crop(self.weight[:cout, : in_shape[0]], k)
        if self.bn is None:
            return {"weight": w, "bias": self.bias[:cout]}
        bn = self.bn
        return {"0.weight": w, "1.weight": bn.weight[:cout], "1.bias": bn.bias[:cout],
                "1.running_mean": bn.running_mean[:cout], "1.running_var": bn.running_var[:cout],
                "1.num_batches_tracked": bn.num_batches_tracked}


@ELASTIC.register("Act")
class ElasticAct(ElasticLayer):
    def __init__(self, spec: ops.Act, space, in_shapes) -> None:
        super().__init__(spec, space, in_shapes)
        kinds = space.choice(spec.kind.label).values if isinstance(spec.kind, Ref) else (spec.kind,)
        self.acts = nn.ModuleDict({k: ops.ACTIVATIONS[k]() for k in kinds})

    def forward(self, x, ctx):
        kind = ctx.value(self.spec.kind)
        if kind is not None:
            return self.acts[kind](x)
        w, kinds = ctx.mixture(self.spec.kind)
        return sum(wi * self.acts[k](x) for wi, k in zip(w, kinds, strict=True))


@ELASTIC.register("MaxPool")
class ElasticPool(ElasticLayer):
    def forward(self, x, ctx):
        return F.max_pool2d(x, ctx.value(self.spec.k))


@ELASTIC.register("Flatten")
class ElasticFlatten(ElasticLayer):
    """Identity: the following ``ElasticLinear`` flattens, because it must know (C, H, W) to slice."""

    def forward(self, x, ctx):
        return x


@ELASTIC.register("GlobalPool")
class ElasticGlobalPool(ElasticLayer):
    def forward(self, x, ctx):
        return x.mean(dim=(2, 3))


@ELASTIC.register("Linear")
class ElasticLinear(ElasticLayer):
    """Linear layer; after a flatten it keeps one weight per input spatial size (H, W), shaped
    ``(out, C, H, W)`` so that slicing the first C channels matches ``torch.flatten``'s order."""

    def __init__(self, spec: ops.Linear, space, in_shapes) -> None:
        super().__init__(spec, space, in_shapes)
        self.out = _max(space, spec.out)
        self.after_flatten = False
        idx = [i for i, s in enumerate(space.layers) if s.name == spec.name][0]
        if idx > 0 and isinstance(space.layers[idx - 1], ops.Flatten):
            self.after_flatten = True
            pre = space.input_shapes(idx - 1)  # (C, H, W) shapes seen by the flatten
            cmax = max(s[0] for s in pre)
            self.weights = nn.ParameterDict()
            for h, w in sorted({s[1:] for s in pre}):
                lin = nn.Linear(cmax * h * w, self.out)
                self.weights[f"{h}x{w}"] = nn.Parameter(lin.weight.detach().view(self.out, cmax, h, w).clone())
            self.bias = nn.Parameter(lin.bias.detach().clone())
        else:
            lin = nn.Linear(max(s[0] for s in in_shapes), self.out)
            self.weight, self.bias = lin.weight, lin.bias

    def forward(self, x, ctx):
        out = ctx.value(self.spec.out) or self.out
        if self.after_flatten:  # x: (B, C, H, W)
            w = self.weights[f"{x.shape[2]}x{x.shape[3]}"][:out, : x.shape[1]].reshape(out, -1)
            x = x.flatten(1)
        else:
            w = self.weight[:out, : x.shape[1]]
        return _mix_width(F.linear(x, w, self.bias[:out]), ctx, self.spec.out, self.out)

    def extract(self, values, in_shape):
        out = ops.resolve(self.spec.out, values)
        if self.after_flatten:
            return {}  # filled by the supernet, which knows the pre-flatten shape
        return {"weight": self.weight[:out, : in_shape[0]], "bias": self.bias[:out]}

    def extract_flat(self, values, pre_shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        out = ops.resolve(self.spec.out, values)
        c, h, w = pre_shape
        return {"weight": self.weights[f"{h}x{w}"][:out, :c].reshape(out, -1), "bias": self.bias[:out]}


@ELASTIC.register("Dropout")
class ElasticDropout(ElasticLayer):
    """Concrete (relaxed Bernoulli) dropout whose rate comes from the sample's hyperparameters, so
    the rate gets a gradient; plain dropout at the rate's value otherwise. Identity without a rate."""

    temperature = 0.1

    def forward(self, x, ctx):
        p = ctx.hparams.get(self.spec.rate)
        if p is None or not self.training:
            return x
        if not p.requires_grad:
            return F.dropout(x, float(p), True)
        p = p.clamp(1e-4, 1 - 1e-4)
        u = torch.rand_like(x).clamp(1e-6, 1 - 1e-6)
        drop = torch.sigmoid((torch.log(p) - torch.log1p(-p) + torch.log(u) - torch.log1p(-u)) / self.temperature)
        return x * (1 - drop) / (1 - p)


from ._mbconv import ElasticMBBlock  # noqa: E402  (registers "MBBlock" and "FixedMB")

__all__ = ["ELASTIC", "ElasticLayer", "ElasticMBBlock"]
