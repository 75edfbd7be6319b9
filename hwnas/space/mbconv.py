"""``mbconv``: an FBNet/ProxylessNAS-style chain for 3x32x32 inputs (CIFAR-10 shape).

stem (3x3 conv, BN, ReLU6) -> stages of searchable blocks -> head (1x1 conv, BN, ReLU6) -> global
pool -> linear. Each block is one choice among MBConv ``kK_eE`` (kernel 3/5/7 x expansion 1/3/6) and
``skip`` where the block keeps its shape (stride 1, same width). Widths, depths and strides are
arguments, so sub-spaces and bigger variants are one call away:
``SPACES.get("mbconv")(widths=(24, 40, 80), depths=(2, 3, 3), strides=(1, 2, 2))``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Choice, SearchSpace
from .ops import Act, Conv, GlobalPool, Linear, MBBlock, mb_values
from .registry import SPACES


@SPACES.register("mbconv")
def mbconv(
    widths: Sequence[int] = (16, 24, 32),
    depths: Sequence[int] = (1, 2, 2),
    strides: Sequence[int] = (1, 2, 2),
    stem: int = 16,
    head: int = 128,
    kernels: Sequence[int] = (3, 5, 7),
    expansions: Sequence[int] = (1, 3, 6),
    num_classes: int = 10,
) -> SearchSpace:
    if not len(widths) == len(depths) == len(strides):
        raise ValueError("mbconv: widths, depths and strides need one entry per stage")
    choices, layers, units = [], [Conv("stem", out=stem, k=3, padding="same", bn=True), Act("stem_act", "relu6")], []
    units.append(("stem", ("stem", "stem_act")))
    cin, i = stem, 0
    for width, depth, stride in zip(widths, depths, strides, strict=True):
        for d in range(depth):
            s = stride if d == 0 else 1
            label = f"b{i}"
            choices.append(Choice(label, mb_values(tuple(kernels), tuple(expansions), skip=s == 1 and cin == width)))
            layers.append(MBBlock(label, label=label, out=width, stride=s))
            units.append((label, (label,)))
            cin, i = width, i + 1
    layers += [Conv("head", out=head, k=1, padding="same", bn=True), Act("head_act", "relu6"), GlobalPool("pool"),
               Linear("fc", out=num_classes)]
    units.append(("head", ("head", "head_act", "pool", "fc")))
    return SearchSpace(
        name="mbconv",
        input_shape=(3, 32, 32),
        num_classes=num_classes,
        description=f"MBConv chain, {i} blocks of k{{3,5,7}} x e{{1,3,6}} (+skip)",
        choices=tuple(choices),
        layers=tuple(layers),
        units=tuple(units),
    )
