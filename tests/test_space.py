"""Contract tests, parametrised over the space registry: every space builds, runs, round-trips."""

from __future__ import annotations

import json
import random

import pytest
import torch
from _contract import contract_space

from hwnas.space import SPACES, ArchError, get_space

SPACE_NAMES = SPACES.names()


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_random_arch_forward_backward(name):
    space = contract_space(name)
    rng = random.Random(0)
    for _ in range(3):
        arch = space.sample(rng)
        model = space.build(arch)
        x = torch.randn(2, *space.input_shape)
        y = model(x)
        assert y.shape == (2, space.num_classes)
        y.sum().backward()
        assert all(p.grad is not None for p in model.parameters())
        assert space.shapes(arch)[-1] == (space.num_classes,)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_arch_json_roundtrip_and_stable_id(name):
    space = contract_space(name)
    arch = space.sample(random.Random(1))
    obj = json.loads(json.dumps(space.to_json(arch)))
    back, hparams = space.from_json(obj)
    assert back == arch and hparams == {}
    assert obj["arch_id"] == space.arch_id(arch) == contract_space(name).arch_id(dict(reversed(list(arch.items()))))
    other = dict(arch)
    lab = space.labels[0]
    other[lab] = next(v for v in space.choice(lab).values if v != arch[lab])
    assert space.arch_id(other) != space.arch_id(arch)


def test_ids_are_pinned():
    # a change here breaks every stored arch file and latency table: bump deliberately, never by accident
    space = get_space("seed-cnn")
    arch = {"C_i": 32, "C_o": 64, "k": 5, "k_p": 2, "n": 128, "act": "relu"}
    assert space.arch_id(arch) == space.arch_id(dict(sorted(arch.items())))
    assert len(space.arch_id(arch)) == 12


def test_seed_cnn_enumerates_216_distinct_archs_with_computed_flatten():
    space = get_space("seed-cnn")
    archs = list(space.enumerate())
    assert len(archs) == space.size == 216
    assert len({space.arch_id(a) for a in archs}) == 216
    # flatten size is computed: k=5, k_p=2 -> 4x4; k=3, k_p=3 -> 2x2; k=3, k_p=2 -> 5x5
    base = {"C_i": 16, "C_o": 64, "n": 128, "act": "relu"}
    flat = space.layers.index(next(s for s in space.layers if s.name == "flatten"))
    assert space.shapes({**base, "k": 5, "k_p": 2})[flat + 1] == (64 * 4 * 4,)
    assert space.shapes({**base, "k": 3, "k_p": 3})[flat + 1] == (64 * 2 * 2,)
    assert space.shapes({**base, "k": 3, "k_p": 2})[flat + 1] == (64 * 5 * 5,)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_sample_is_uniform_and_valid(name):
    space = contract_space(name)
    rng = random.Random(0)
    label = space.labels[0]
    counts = {v: 0 for v in space.choice(label).values}
    for _ in range(600):
        counts[space.validate(space.sample(rng))[label]] += 1
    assert min(counts.values()) > 600 / len(counts) * 0.6


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_latency_units_cover_the_network(name):
    space = contract_space(name)
    units = space.latency_units()
    assert [n for u in units for n in u.layers] == [s.name for s in space.layers]
    arch = space.sample(random.Random(2))
    for u in units:
        module, in_shape = space.build_unit(u, arch)
        out = module.eval()(torch.randn(1, *in_shape))
        assert out.shape[0] == 1
        assert all(lab in space.labels for lab in u.labels)
        assert u.key(arch).startswith(u.name)


def test_seed_cnn_units_depend_on_the_labels_that_set_their_input():
    units = {u.name: u.labels for u in get_space("seed-cnn").latency_units()}
    assert units["conv1"] == ("C_i", "act", "k", "k_p")
    assert units["conv2"] == ("C_i", "C_o", "act", "k", "k_p")
    assert units["fc1"] == ("C_o", "act", "k", "k_p", "n")
    assert units["fc2"] == ("n",)


def test_mbconv_is_configurable_and_skip_only_where_shapes_allow():
    space = get_space("mbconv", widths=(8, 16), depths=(2, 1), strides=(1, 2), stem=8, head=32)
    assert space.labels == ["b0", "b1", "b2"]
    assert "skip" in space.choice("b0").values and "skip" in space.choice("b1").values
    assert "skip" not in space.choice("b2").values  # stride 2, width change
    assert len(space.choice("b2").values) == 9


def test_invalid_archs_are_explained():
    space = get_space("seed-cnn")
    arch = space.sample(random.Random(0))
    with pytest.raises(ArchError, match="does not declare"):
        space.validate({**arch, "depth": 3})
    with pytest.raises(ArchError, match="is not a choice.*pick one of"):
        space.validate({**arch, "k": 7})
    with pytest.raises(ArchError, match="missing"):
        space.validate({k: v for k, v in arch.items() if k != "n"})
    with pytest.raises(ArchError, match="for space 'mbconv'"):
        space.from_json({"space": "mbconv", "arch": arch})
