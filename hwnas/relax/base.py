"""The relaxation contract: architecture parameters, ``probs()``, per-step samples, ``derive()``.

A relaxation owns one logit vector per choice label and turns it into the ``Sample`` the supernet
consumes in a forward pass. For each label a sample holds either

* ``Soft(weights)``: a mixture; the supernet computes every candidate (or a masked equivalent) and
  weights it (softmax, gumbel), or
* ``Hard(index)``: one candidate (single-path, or a fixed arch). Its gradient to the logits is the
  relaxation's business: ``arch_loss(ce, sample)`` turns the validation loss into the loss the
  architecture step minimises (single-path adds its straight-through term there).

Relaxations and latency models meet only through ``probs()``: neither knows the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ConfigError

if TYPE_CHECKING:  # relaxations read only space.choices; no import at run time
    from ..space import Arch, SearchSpace


@dataclass
class Hard:
    """One candidate ``index``."""

    index: int


@dataclass
class Soft:
    """A mixture over all candidates with ``weights`` (1-D, sums to 1)."""

    weights: torch.Tensor


@dataclass
class Sample:
    """What one supernet forward pass runs: a state per label, and continuous hyperparameters."""

    choices: dict[str, Hard | Soft]
    hparams: dict[str, torch.Tensor] = field(default_factory=dict)
    st_weight: torch.Tensor | None = None  # straight-through weight of a hard sample (value 1)

    @classmethod
    def fixed(cls, space: SearchSpace, arch: Arch, hparams: dict[str, float] | None = None) -> Sample:
        """The sample that runs exactly ``arch`` (no gradient to any architecture parameter)."""
        arch = space.validate(arch)
        choices = {lab: Hard(space.choice(lab).values.index(v)) for lab, v in arch.items()}
        return cls(choices, {k: torch.tensor(float(v)) for k, v in (hparams or {}).items()})


class Relaxation(nn.Module):
    """Base class: logits ``alpha[label]`` (zeros = uniform) and the shared bookkeeping.

    Subclasses override ``sample()`` (and ``set_progress()`` when they anneal a temperature).

    Args:
        space: the search space whose choices are relaxed.
        tau_max, tau_min: temperature schedule endpoints (used by sampling relaxations).
    """

    name = "base"

    def __init__(self, space: SearchSpace, *, tau_max: float = 5.0, tau_min: float = 0.5) -> None:
        super().__init__()
        if not 0 < tau_min <= tau_max:
            raise ValueError(f"need 0 < tau_min <= tau_max, got {tau_min}, {tau_max}")
        self.space = space
        self.alpha = nn.ParameterDict({c.label: nn.Parameter(torch.zeros(len(c.values))) for c in space.choices})
        self.tau_max, self.tau_min = tau_max, tau_min
        self.register_buffer("tau", torch.tensor(tau_max))

        self.allowed: dict[str, torch.Tensor] = {}  # label -> bool mask of the values a sub-space keeps

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha.values())

    def restrict(self, subspace: dict[str, list]) -> None:
        """Search only a sub-space: values outside ``subspace[label]`` get probability 0 (and no gradient)."""
        for lab, keep in subspace.items():
            if lab not in self.alpha:
                raise ConfigError(f"sub-space label {lab!r} is not a label of space {self.space.name!r}; its labels "
                                  f"are {list(self.alpha)}")
            values = self.space.choice(lab).values
            if not keep or any(v not in values for v in keep):
                raise ConfigError(f"sub-space of {lab!r} must be a non-empty subset of {values}, got {keep}")
            self.allowed[lab] = torch.tensor([v in keep for v in values], device=self.alpha[lab].device)

    def logits(self) -> dict[str, torch.Tensor]:
        """``alpha`` with the values outside the sub-space at -inf."""
        return {lab: a.masked_fill(~self.allowed[lab], float("-inf")) if lab in self.allowed else a
                for lab, a in self.alpha.items()}

    def probs(self) -> dict[str, torch.Tensor]:
        """The factorised choice distribution: ``softmax(alpha[label])`` per label (differentiable)."""
        return {lab: torch.softmax(a, dim=0) for lab, a in self.logits().items()}

    def set_progress(self, fraction: float) -> None:
        """Anneal the temperature exponentially from ``tau_max`` (fraction 0) to ``tau_min`` (fraction 1)."""
        f = min(max(fraction, 0.0), 1.0)
        self.tau.fill_(self.tau_max * (self.tau_min / self.tau_max) ** f)

    def sample(self, generator: torch.Generator | None = None) -> Sample:
        raise NotImplementedError

    def arch_loss(self, ce: torch.Tensor, sample: Sample) -> torch.Tensor:
        """The loss of the architecture step for validation cross-entropy ``ce`` under ``sample``."""
        return ce

    def derive(self) -> Arch:
        """The most probable arch (argmax of each label's probabilities)."""
        return {lab: self.space.choice(lab).values[int(torch.argmax(a))] for lab, a in self.logits().items()}

    @torch.no_grad()
    def entropies(self) -> dict[str, float]:
        """Entropy (nats) of each label's distribution; log(n) is uniform, 0 is decided."""
        return {lab: float(-(p * torch.log(p.clamp_min(1e-12))).sum()) for lab, p in self.probs().items()}

    @torch.no_grad()
    def probs_dict(self) -> dict[str, dict[str, float]]:
        """``{label: {str(value): prob}}`` for history files and plots."""
        return {lab: {str(v): float(x) for v, x in zip(self.space.choice(lab).values, p, strict=True)}
                for lab, p in self.probs().items()}

    def describe(self) -> dict[str, Any]:
        return {"relaxation": self.name, "tau": float(self.tau)}


def gumbel_noise(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log U)``, drawn from ``generator`` for reproducibility."""
    u = torch.rand(shape, generator=generator).to(device)
    return -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))
