"""``seed-cnn``: the classic MNIST example as a 216-arch space (1x28x28 inputs, 10 classes).

conv1 (1->C_i, k) -> act -> maxpool k_p -> conv2 (C_i->C_o, k) -> act -> maxpool k_p -> flatten
-> fc1 (->n) -> act -> [dropout] -> fc2 (n->10). Convolutions are unpadded, so the flattened size
depends on k and k_p (k=5, k_p=2 gives 64*4*4; k=3, k_p=3 gives 64*2*2); it is computed, never fixed.
"""

from __future__ import annotations

from .base import Choice, Continuous, SearchSpace
from .ops import Act, Conv, Dropout, Flatten, Linear, MaxPool, Ref
from .registry import SPACES


@SPACES.register("seed-cnn")
def seed_cnn() -> SearchSpace:
    act = Ref("act")
    return SearchSpace(
        name="seed-cnn",
        input_shape=(1, 28, 28),
        num_classes=10,
        description="classic MNIST CNN: widths, kernel, pool, fc width, activation",
        choices=(
            Choice("C_i", (16, 32, 64)),
            Choice("C_o", (16, 32, 64)),
            Choice("k", (3, 5)),
            Choice("k_p", (2, 3)),
            Choice("n", (128, 256, 512)),
            Choice("act", ("relu", "tanh")),
        ),
        layers=(
            Conv("conv1", out=Ref("C_i"), k=Ref("k")),
            Act("act1", act),
            MaxPool("pool1", Ref("k_p")),
            Conv("conv2", out=Ref("C_o"), k=Ref("k")),
            Act("act2", act),
            MaxPool("pool2", Ref("k_p")),
            Flatten("flatten"),
            Linear("fc1", out=Ref("n")),
            Act("act3", act),
            Dropout("drop", rate="dropout"),
            Linear("fc2", out=10),
        ),
        units=(
            ("conv1", ("conv1", "act1", "pool1")),
            ("conv2", ("conv2", "act2", "pool2")),
            ("fc1", ("flatten", "fc1", "act3")),
            ("fc2", ("drop", "fc2")),
        ),
        continuous=(Continuous("dropout", 0.0, 0.5, 0.1),),
    )
