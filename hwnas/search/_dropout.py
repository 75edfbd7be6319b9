"""The continuous dropout rate, learned on the validation loss by a one-step hypergradient.

The rate only acts while weights train, so the first-order gradient of the validation loss with
respect to it is zero. As in second-order DARTS, we differentiate the validation loss through one
weight step ``w' = w - xi * grad_w L_train(w, p)``:

    dL_val(w')/dp  ~=  -xi * (grad_p L_train(w+, p) - grad_p L_train(w-, p)) / (2 eps),
    w+- = w +- eps * grad_w L_val(w),   eps = 0.01 / ||grad_w L_val||

with a concrete (relaxed Bernoulli) dropout so that ``L_train`` is differentiable in ``p``. The rate is
``p = low + (high - low) * sigmoid(theta)``; ``theta`` is what Adam updates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..space import Continuous


class LearnedRate(nn.Module):
    def __init__(self, spec: Continuous) -> None:
        super().__init__()
        self.spec = spec
        frac = (spec.init - spec.low) / (spec.high - spec.low)
        self.theta = nn.Parameter(torch.logit(torch.tensor(frac).clamp(1e-3, 1 - 1e-3)))

    def rate(self) -> torch.Tensor:
        return self.spec.low + (self.spec.high - self.spec.low) * torch.sigmoid(self.theta)

    def value(self) -> float:
        return float(self.rate().detach())

    def hypergradient_step(self, supernet, sample_fn, x: torch.Tensor, y: torch.Tensor, xi: float,
                           opt: torch.optim.Optimizer, seed: int, sync=None) -> None:
        """One Adam step on ``theta``; the supernet's ``.grad`` must hold ``grad_w L_val`` on entry.

        ``sync`` averages ``theta``'s gradient over data-parallel ranks before the step.
        """
        params = [p for p in supernet.parameters() if p.grad is not None]
        grads = [p.grad.detach().clone() for p in params]
        norm = torch.sqrt(sum((g * g).sum() for g in grads)).item()
        if norm == 0:
            return
        eps = 0.01 / norm
        sides = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.add_(g, alpha=sign * eps)
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(seed)  # the same dropout noise on both sides
                sample = sample_fn()
                sample.hparams[self.spec.label] = self.rate()
                loss = F.cross_entropy(supernet(x, sample), y)
            (g_theta,) = torch.autograd.grad(loss, [self.theta])
            sides.append(g_theta)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.add_(g, alpha=-sign * eps)
        opt.zero_grad()
        self.theta.grad = -xi * (sides[0] - sides[1]) / (2 * eps)
        if sync is not None:
            sync([self.theta])
        opt.step()
