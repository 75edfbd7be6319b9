"""``gumbel``: FBNet's Gumbel-Softmax. Each step draws ``softmax((alpha + g) / tau)`` with fresh
Gumbel noise ``g`` per label and step; ``tau`` anneals exponentially from ``tau_max`` to ``tau_min``
over the search. Every candidate runs (as in softmax); shape-changing choices split paths the same way.
"""

from __future__ import annotations

import torch

from .base import Relaxation, Sample, Soft, gumbel_noise
from .registry import RELAXATIONS


@RELAXATIONS.register("gumbel")
class GumbelRelaxation(Relaxation):
    name = "gumbel"

    def sample(self, generator=None) -> Sample:
        out = {}
        for lab, a in self.logits().items():
            g = gumbel_noise(a.shape, generator, a.device)
            out[lab] = Soft(torch.softmax((a + g) / self.tau, dim=0))
        return Sample(out)
