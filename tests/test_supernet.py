"""The supernet computes, for any fixed arch, exactly the plain network with the same weights."""

from __future__ import annotations

import random

import pytest
import torch
from _contract import contract_space

from hwnas.relax import RELAXATIONS, Sample, Soft, make_relaxation
from hwnas.space import SPACES, get_space
from hwnas.supernet import Supernet

SPACE_NAMES = SPACES.names()


def _perturb_bn(net: torch.nn.Module) -> None:
    """Give BatchNorm non-trivial statistics so that eval mode is really tested."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)


@pytest.mark.parametrize("name", SPACE_NAMES)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fixed_arch_equals_plain_module(name, mode):
    torch.manual_seed(0)
    space = contract_space(name)
    net = Supernet(space)
    _perturb_bn(net)
    rng = random.Random(3)
    x = torch.randn(4, *space.input_shape)
    for _ in range(4):
        arch = space.sample(rng)
        plain = net.extract(arch)
        getattr(net, mode)()
        getattr(plain, mode)()
        with torch.no_grad():
            torch.testing.assert_close(net(x, Sample.fixed(space, arch)), plain(x), rtol=1e-5, atol=1e-5)


def test_every_seed_cnn_arch_extracts_into_its_plain_module():
    space = get_space("seed-cnn")
    net = Supernet(space).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        for arch in space.enumerate():
            torch.testing.assert_close(net(x, Sample.fixed(space, arch)), net.extract(arch).eval()(x))


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_one_hot_mixture_equals_fixed_arch(name):
    """A soft sample with one-hot weights must run exactly the arch it points at (paths, masks, merges)."""
    torch.manual_seed(1)
    space = contract_space(name)
    net = Supernet(space).eval()
    arch = space.sample(random.Random(5))
    soft = Sample({c.label: Soft(torch.nn.functional.one_hot(torch.tensor(c.values.index(arch[c.label])),
                                                             len(c.values)).float()) for c in space.choices})
    x = torch.randn(3, *space.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(net(x, soft), net(x, Sample.fixed(space, arch)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SPACE_NAMES)
@pytest.mark.parametrize("relaxation", RELAXATIONS.names())
def test_relaxed_forward_backward_reaches_weights(name, relaxation):
    torch.manual_seed(0)
    space = contract_space(name)
    net, relax = Supernet(space).train(), make_relaxation(relaxation, space)
    x, y = torch.randn(4, *space.input_shape), torch.randint(0, space.num_classes, (4,))
    sample = relax.sample(torch.Generator().manual_seed(0))
    ce = torch.nn.functional.cross_entropy(net(x, sample), y)
    relax.arch_loss(ce, sample).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    # the architecture parameters receive a gradient (single-path: after its baseline exists)
    if relaxation == "single-path":
        relax.zero_grad()
        sample = relax.sample(torch.Generator().manual_seed(1))
        ce = torch.nn.functional.cross_entropy(net(x, sample), y) * 2
        relax.arch_loss(ce, sample).backward()
    assert any(a.grad is not None and a.grad.abs().sum() > 0 for a in relax.arch_parameters())


def test_softmax_splits_shape_changing_choices_and_merges():
    space = get_space("seed-cnn")
    net = Supernet(space)
    relax = make_relaxation("softmax", space)
    out = net(torch.randn(2, 1, 28, 28), relax.sample())
    assert out.shape == (2, 10)
    # fc1 holds one weight per spatial size it can see: (k, k_p) in {3,5} x {2,3}
    assert sorted(net.layers[7].weights.keys()) == ["1x1", "2x2", "4x4", "5x5"]
