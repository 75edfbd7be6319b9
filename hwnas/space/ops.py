"""Declarative layer specs: the vocabulary a search space is written in.

A spec is data. Its parameters are constants or ``Ref(label)`` pointing at a choice of the space.
Given concrete values, a spec builds a plain ``nn.Module`` and computes its output shape; the
supernet (``hwnas.supernet``) builds the weight-sharing counterpart of each spec from the same data.

Shapes are per sample, without the batch axis: ``(C, H, W)`` for feature maps, ``(F,)`` for vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Ref:
    """A parameter whose value is the value of choice ``label`` in the arch."""

    label: str


def labels_of(*params: Any) -> set[str]:
    return {p.label for p in params if isinstance(p, Ref)}


def resolve(param: Any, values: Mapping[str, Any]) -> Any:
    return values[param.label] if isinstance(param, Ref) else param


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
}


def conv_out(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


@dataclass(frozen=True)
class Spec:
    """Base of all layer specs. ``name`` is the layer's name in the plain module (and in weights)."""

    name: str

    def labels(self) -> set[str]:
        """Every choice label this layer reads."""
        return set()

    def shape_labels(self) -> set[str]:
        """Labels whose value changes the spatial output shape (the supernet splits paths on them)."""
        return set()

    def out_shape(self, values: Mapping[str, Any], in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def propagate(self, chan: set[str], spatial: set[str]) -> tuple[set[str], set[str]]:
        """Labels the output's (channel count, spatial size) depend on, given those of the input."""
        return chan, spatial

    def build(self, values: Mapping[str, Any], in_shape: tuple[int, ...], hparams: Mapping[str, float]) -> nn.Module:
        raise NotImplementedError


@dataclass(frozen=True)
class Conv(Spec):
    """Conv2d (optionally + BatchNorm). ``padding='same'`` keeps H, W at stride 1; ``'valid'`` shrinks them."""

    out: Any = 16
    k: Any = 3
    stride: int = 1
    padding: str = "valid"
    bn: bool = False

    def labels(self) -> set[str]:
        return labels_of(self.out, self.k)

    def shape_labels(self) -> set[str]:
        return labels_of(self.k) if self.padding == "valid" else set()

    def pad(self, k: int) -> int:
        return k // 2 if self.padding == "same" else 0

    def out_shape(self, values, in_shape):
        k = resolve(self.k, values)
        _, h, w = in_shape
        p = self.pad(k)
        return (resolve(self.out, values), conv_out(h, k, self.stride, p), conv_out(w, k, self.stride, p))

    def propagate(self, chan, spatial):
        return labels_of(self.out), spatial | self.shape_labels()

    def build(self, values, in_shape, hparams):
        k, out = resolve(self.k, values), resolve(self.out, values)
        conv = nn.Conv2d(in_shape[0], out, k, self.stride, self.pad(k), bias=not self.bn)
        return nn.Sequential(conv, nn.BatchNorm2d(out)) if self.bn else conv


@dataclass(frozen=True)
class Act(Spec):
    """Elementwise activation, one of ``ACTIVATIONS``."""

    kind: Any = "relu"

    def labels(self) -> set[str]:
        return labels_of(self.kind)

    def build(self, values, in_shape, hparams):
        return ACTIVATIONS[resolve(self.kind, values)]()


@dataclass(frozen=True)
class MaxPool(Spec):
    """Max pooling with kernel = stride = ``k`` (floor mode)."""

    k: Any = 2

    def labels(self) -> set[str]:
        return labels_of(self.k)

    def shape_labels(self) -> set[str]:
        return labels_of(self.k)

    def out_shape(self, values, in_shape):
        k = resolve(self.k, values)
        c, h, w = in_shape
        return (c, h // k, w // k)

    def propagate(self, chan, spatial):
        return chan, spatial | self.shape_labels()

    def build(self, values, in_shape, hparams):
        return nn.MaxPool2d(resolve(self.k, values))


@dataclass(frozen=True)
class Flatten(Spec):
    """``(C, H, W) -> (C*H*W,)``, channel-major like ``torch.flatten``."""

    def out_shape(self, values, in_shape):
        n = 1
        for d in in_shape:
            n *= d
        return (n,)

    def propagate(self, chan, spatial):
        return chan | spatial, set()

    def build(self, values, in_shape, hparams):
        return nn.Flatten()


@dataclass(frozen=True)
class GlobalPool(Spec):
    """Global average pooling ``(C, H, W) -> (C,)``."""

    def out_shape(self, values, in_shape):
        return (in_shape[0],)

    def propagate(self, chan, spatial):
        return chan, set()

    def build(self, values, in_shape, hparams):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


@dataclass(frozen=True)
class Linear(Spec):
    """Fully connected layer ``(F,) -> (out,)``."""

    out: Any = 10

    def labels(self) -> set[str]:
        return labels_of(self.out)

    def out_shape(self, values, in_shape):
        return (resolve(self.out, values),)

    def propagate(self, chan, spatial):
        return labels_of(self.out), set()

    def build(self, values, in_shape, hparams):
        return nn.Linear(in_shape[0], resolve(self.out, values))


@dataclass(frozen=True)
class Dropout(Spec):
    """Dropout whose rate is the continuous hyperparameter ``rate`` (0 when the space's hparam is off)."""

    rate: str = "dropout"

    def build(self, values, in_shape, hparams):
        p = float(hparams.get(self.rate, 0.0))
        return nn.Dropout(p) if p > 0 else nn.Identity()


def parse_mb(value: str) -> tuple[int, int] | None:
    """``'k5_e3' -> (5, 3)``; ``'skip' -> None``."""
    if value == "skip":
        return None
    k, e = value.split("_")
    return int(k[1:]), int(e[1:])


def mb_values(kernels: tuple[int, ...], expansions: tuple[int, ...], skip: bool) -> tuple[str, ...]:
    vals = tuple(f"k{k}_e{e}" for k in kernels for e in expansions)
    return vals + (("skip",) if skip else ())


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2): [1x1 expand] -> kxk depthwise -> 1x1 project, BN + ReLU6.

    With expansion 1 there is no expand conv. A residual is added when stride is 1 and widths match.
    """

    def __init__(self, cin: int, cout: int, k: int, e: int, stride: int) -> None:
        super().__init__()
        hidden = cin * e
        self.expand = (
            nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
            if e != 1
            else nn.Identity()
        )
        self.dw = nn.Sequential(
            nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
        )
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, cin, H, W) -> (B, cout, H/s, W/s)
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


@dataclass(frozen=True)
class MBBlock(Spec):
    """One searchable block: the choice ``label`` picks an MBConv ``kK_eE`` or ``skip``."""

    label: str = ""
    out: int = 16
    stride: int = 1

    def labels(self) -> set[str]:
        return {self.label}

    def out_shape(self, values, in_shape):
        _, h, w = in_shape
        return (self.out, conv_out(h, 3, self.stride, 1), conv_out(w, 3, self.stride, 1))

    def propagate(self, chan, spatial):
        return set(), spatial

    def build(self, values, in_shape, hparams):
        return self.module(values[self.label], in_shape[0])

    def module(self, value: str, cin: int) -> nn.Module:
        """The plain block for ``value`` (``kK_eE`` or ``skip``) on ``cin`` input channels."""
        kind = parse_mb(value)
        if kind is None:
            return nn.Identity()
        return MBConv(cin, self.out, kind[0], kind[1], self.stride)


@dataclass(frozen=True)
class FixedMB(MBBlock):
    """An MBConv block without a choice: always ``op`` (``kK_eE``), e.g. ProxylessNAS's first block."""

    op: str = "k3_e1"

    def labels(self) -> set[str]:
        return set()

    def build(self, values, in_shape, hparams):
        return self.module(self.op, in_shape[0])
