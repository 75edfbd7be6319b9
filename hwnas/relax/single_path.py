"""``single-path``: one hard sample per label and step, with a straight-through gradient.

Each label's index is drawn by Gumbel-max, i.e. from ``softmax(alpha)`` itself, and only that
sub-network runs, so a step costs about one plain network; shape-changing choices need no path
splitting. The relaxed sample ``y = softmax((alpha + g) / tau)`` carries the gradient: the weight
``w = prod_labels (1 - y_i.detach() + y_i)`` has value 1, and the architecture loss is

    L = CE + (w - w.detach()) * (CE.detach() - b)

whose value is CE and whose gradient is ``dL/dalpha = (CE - b) * dw/dalpha``, with ``b`` a running
mean of CE. A sampled candidate whose sub-network beats the running loss gains probability, one that
does worse loses it. Scaling the output of the sampled op instead (the GDAS form) judged candidates by
whether a larger activation helps, which picked bottlenecks on our sanity task; this form judges them
by their loss. The hardware term needs no estimator: its gradient comes exactly from ``probs()``.
"""

from __future__ import annotations

import torch

from .base import Hard, Relaxation, Sample, gumbel_noise
from .registry import RELAXATIONS


@RELAXATIONS.register("single-path")
class SinglePathRelaxation(Relaxation):
    name = "single-path"

    def __init__(self, space, *, tau_max: float = 1.0, tau_min: float = 1.0, baseline_decay: float = 0.9) -> None:
        super().__init__(space, tau_max=tau_max, tau_min=tau_min)
        self.baseline_decay = baseline_decay
        self.register_buffer("baseline", torch.tensor(float("nan")))

    def sample(self, generator=None) -> Sample:
        choices, weight = {}, None
        for lab, a in self.logits().items():
            g = gumbel_noise(a.shape, generator, a.device)
            i = int(torch.argmax(a.detach() + g))
            y = torch.softmax((a + g) / self.tau, dim=0)[i]
            w = 1.0 - y.detach() + y
            weight = w if weight is None else weight * w
            choices[lab] = Hard(i)
        return Sample(choices, st_weight=weight)

    def arch_loss(self, ce: torch.Tensor, sample: Sample) -> torch.Tensor:
        value = ce.detach()
        if torch.isnan(self.baseline):
            self.baseline.copy_(value)
        advantage = value - self.baseline
        self.baseline.mul_(self.baseline_decay).add_((1 - self.baseline_decay) * value)
        if sample.st_weight is None:
            return ce
        return ce + (sample.st_weight - sample.st_weight.detach()) * advantage
