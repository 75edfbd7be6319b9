"""``proxyless``: ProxylessNAS's ImageNet search space (Cai, Zhu, Han, ICLR 2019), 3x224x224 inputs.

stem (3x3 conv stride 2 to 32, BN, ReLU6) -> MBConv expand 1 kernel 3 to 16 (fixed) -> six stages of
(width, blocks, first stride) = (24,4,2), (40,4,2), (80,4,2), (96,4,1), (192,4,2), (320,1,1) -> 1x1 conv
to 1280 (BN, ReLU6) -> global pool -> FC. Each of the 21 blocks is one choice among MBConv kernel
{3,5,7} x expansion {3,6}; every block but a stage's first may also be ``skip`` (zero: the block is
left out), so 15 positions have 7 values and the 6 stage-first ones have 6.

Latency units follow the keys of ProxylessNAS's published lookup tables (``hwnas latency import
--format proxylessnas``): ``stem`` (Conv), ``first`` (the fixed block), one per block, ``head``
(Conv_1) and ``logits`` (pool + classifier). ``input_size`` and ``num_classes`` shrink the network for
training on small data; its latency is still predicted at 224x224 and 1000 classes (``latency_args``),
the geometry the tables describe, because a searched arch is deployed there.
"""

from __future__ import annotations

from .base import Arch, Choice, SearchSpace
from .named import NAMED_ARCHS
from .ops import Act, Conv, FixedMB, GlobalPool, Linear, MBBlock, mb_values
from .registry import SPACES

STAGES = ((24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))  # (width, blocks, stride)
KERNELS, EXPANSIONS = (3, 5, 7), (3, 6)
INPUT_SIZE, NUM_CLASSES = 224, 1000  # the geometry of ProxylessNAS's ImageNet search and its latency tables


@SPACES.register("proxyless")
def proxyless(input_size: int = INPUT_SIZE, num_classes: int = NUM_CLASSES) -> SearchSpace:
    if input_size < 32:
        raise ValueError(f"proxyless: input_size must be >= 32 (the net downsamples 32x), got {input_size}")
    if num_classes < 2:
        raise ValueError(f"proxyless: num_classes must be >= 2, got {num_classes}")
    layers = [Conv("stem", out=32, k=3, stride=2, padding="same", bn=True), Act("stem_act", "relu6"),
              FixedMB("first", out=16, stride=1, op="k3_e1")]
    units = [("stem", ("stem", "stem_act")), ("first", ("first",))]
    choices, cin, i = [], 16, 0
    for width, depth, stride in STAGES:
        for d in range(depth):
            s = stride if d == 0 else 1
            label = f"b{i}"
            choices.append(Choice(label, mb_values(KERNELS, EXPANSIONS, skip=s == 1 and cin == width)))
            layers.append(MBBlock(label, label=label, out=width, stride=s))
            units.append((label, (label,)))
            cin, i = width, i + 1
    layers += [Conv("head", out=1280, k=1, padding="same", bn=True), Act("head_act", "relu6"), GlobalPool("pool"),
               Linear("fc", out=num_classes)]
    units += [("head", ("head", "head_act")), ("logits", ("pool", "fc"))]
    geometry = {"input_size": INPUT_SIZE, "num_classes": NUM_CLASSES}
    return SearchSpace(
        name="proxyless",
        input_shape=(3, input_size, input_size),
        num_classes=num_classes,
        description=f"ProxylessNAS ImageNet space, {i} blocks of k{{3,5,7}} x e{{3,6}} (+skip), "
                    f"{input_size}x{input_size}",
        choices=tuple(choices),
        layers=tuple(layers),
        units=tuple(units),
        latency_args=None if (input_size, num_classes) == (INPUT_SIZE, NUM_CLASSES) else geometry,
    )


# ProxylessNAS-Mobile, stage by stage: the block names of its TFLite benchmark on the Pixel 1
# (``expanded_conv_N/up_E-ks_K-st_S-id_I``) in mit-han-lab/proxylessnas, logs/proxyless_mobile_10_latency.txt;
# the same choices as the released net (osmr/imgclsmob ``proxylessnas_mobile``: kernel_sizes, expansions and
# residuals [[1], [1, 1, 0, 0], ...], a 0 being a skipped block). The paper: 78 ms on the Pixel 1, 74.6% top-1.
MOBILE = (("k5_e3", "k3_e3", "skip", "skip"), ("k7_e3", "k3_e3", "k5_e3", "k5_e3"), ("k7_e6", "k5_e3", "k5_e3", "k5_e3"),
          ("k5_e6", "k5_e3", "k5_e3", "k5_e3"), ("k7_e6", "k7_e6", "k7_e3", "k7_e3"), ("k7_e6",))


@NAMED_ARCHS.register("proxyless:proxylessnas-mobile")
def proxylessnas_mobile() -> Arch:
    """ProxylessNAS-Mobile (Cai, Zhu, Han, ICLR 2019), searched for the Pixel 1."""
    return {f"b{i}": v for i, v in enumerate(v for stage in MOBILE for v in stage)}
