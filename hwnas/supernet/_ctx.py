"""What an elastic layer sees of the sample: per label either a fixed value or mixture weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..space.ops import Ref


@dataclass
class LabelCtx:
    """Resolves layer parameters inside one forward path.

    ``fixed`` maps labels to values fixed on this path (hard samples and path splits); ``soft`` maps
    the remaining labels to their mixture weights. ``values`` gives each label's candidate values.
    """

    fixed: Mapping[str, Any]
    soft: Mapping[str, torch.Tensor]
    values: Mapping[str, tuple]
    hparams: Mapping[str, torch.Tensor]

    def value(self, param: Any) -> Any | None:
        """The concrete value of ``param`` (a constant or a fixed label), or None if it is a mixture."""
        if not isinstance(param, Ref):
            return param
        return self.fixed.get(param.label)

    def mixture(self, param: Ref) -> tuple[torch.Tensor, tuple]:
        """``(weights, values)`` of a label that is mixed on this path."""
        return self.soft[param.label], self.values[param.label]


def width_mask(weights: torch.Tensor, widths: tuple[int, ...], cmax: int) -> torch.Tensor:
    """``sum_j w_j * [c < widths_j]`` for c in range(cmax): the expected channel mask, shape (cmax,)."""
    idx = torch.arange(cmax, device=weights.device)
    masks = torch.stack([(idx < w).to(weights.dtype) for w in widths])  # (J, cmax)
    return weights @ masks


def kernel_mask(weights: torch.Tensor, kernels: tuple[int, ...], kmax: int) -> torch.Tensor:
    """``sum_j w_j * [inside centre k_j x k_j]``: the expected kernel mask, shape (kmax, kmax)."""
    out = torch.zeros(kmax, kmax, device=weights.device, dtype=weights.dtype)
    for w, k in zip(weights, kernels, strict=True):
        m = torch.zeros(kmax, kmax, device=weights.device, dtype=weights.dtype)
        s = (kmax - k) // 2
        m[s:s + k, s:s + k] = 1
        out = out + w * m
    return out


def crop(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Centre ``k x k`` crop of a ``(..., K, K)`` kernel."""
    s = (weight.shape[-1] - k) // 2
    return weight[..., s:s + k, s:s + k]
