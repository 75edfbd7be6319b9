"""``softmax``: the DARTS mixture. Every candidate runs, weighted by ``softmax(alpha)``.

Shape-changing choices (unpadded kernel sizes, pool sizes) cannot be summed where they act; the
supernet splits the forward into one path per value, each weighted by its probability, and sums the
paths where their shapes agree again (seed-cnn: at fc1's output). Width choices mix by channel masks.
"""

from __future__ import annotations

from .base import Relaxation, Sample, Soft
from .registry import RELAXATIONS


@RELAXATIONS.register("softmax")
class SoftmaxRelaxation(Relaxation):
    name = "softmax"

    def sample(self, generator=None) -> Sample:
        return Sample({lab: Soft(p) for lab, p in self.probs().items()})
