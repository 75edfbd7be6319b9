"""Contract over every space and relaxation: every weight of the supernet and every architecture label's
parameters receive a gradient (``all``, not ``any``).

Softmax and Gumbel-Softmax run every path in every step (two steps suffice). Single-path samples one
path per step and touches only that path's weights, so its gradients are summed over steps with different
samples: mbconv keeps a BatchNorm per (kernel, expansion) pair of a block, 9 pairs
at most, and 96 uniform samples miss a given pair with probability (8/9)^96 < 0.002% (the generator seeds
are fixed, so the test is deterministic). A parameter that never
gets a gradient is dead weight that the search cannot train, or a label the search cannot move.
"""

from __future__ import annotations

import pytest
import torch
from _contract import contract_space

from hwnas.relax import RELAXATIONS, make_relaxation
from hwnas.space import SPACES
from hwnas.supernet import Supernet

STEPS = {"softmax": 2, "gumbel": 2}  # soft relaxations; the others SAMPLED_STEPS
SAMPLED_STEPS = 96


@pytest.mark.parametrize("name", SPACES.names())
@pytest.mark.parametrize("relaxation", RELAXATIONS.names())
def test_every_parameter_and_label_gets_a_gradient(name, relaxation):
    torch.manual_seed(0)
    space = contract_space(name)
    net, relax = Supernet(space).train(), make_relaxation(relaxation, space)
    x, y = torch.randn(4, *space.input_shape), torch.randint(0, space.num_classes, (4,))
    for step in range(STEPS.get(relaxation, SAMPLED_STEPS)):
        sample = relax.sample(torch.Generator().manual_seed(step))
        ce = torch.nn.functional.cross_entropy(net(x, sample), y) * (1 + step % 3)  # single-path: != baseline
        relax.arch_loss(ce, sample).backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"{len(dead)} supernet parameters never got a gradient: {dead[:8]}"
    labels = [c.label for c in space.choices]
    params = list(relax.arch_parameters())
    assert len(params) >= 1
    frozen = [i for i, a in enumerate(params) if a.grad is None or not (a.grad.abs() > 0).all()]
    assert not frozen, (f"architecture parameters {frozen} (of {len(params)}; labels {labels}) have entries "
                        f"with no gradient")
