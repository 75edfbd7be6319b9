"""The differentiable predictor: exact expectation, exact gradient, extremes (synthetic tables, no timing)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest_latency import synthetic_table

from hwnas.latency import LatencyModel
from hwnas.space import get_space


@pytest.fixture(scope="module")
def seed_model() -> LatencyModel:
    space = get_space("seed-cnn")
    return LatencyModel(space, synthetic_table(space, seed=1))


def random_probs(space, gen: torch.Generator, dtype=torch.float64) -> dict[str, torch.Tensor]:
    return {c.label: torch.softmax(2 * torch.randn(len(c.values), generator=gen, dtype=dtype), 0)
            for c in space.choices}


def brute_force_expectation(model: LatencyModel, probs: dict[str, torch.Tensor]) -> float:
    space, total = model.space, 0.0
    for arch in space.enumerate():
        p = math.prod(float(probs[c.label][c.values.index(arch[c.label])]) for c in space.choices)
        total += p * model.predict(arch)
    return total


def test_expected_matches_enumeration_over_all_216_archs(seed_model):
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        probs = random_probs(seed_model.space, gen)
        got = seed_model.expected(probs)
        assert got.dim() == 0
        assert float(got) == pytest.approx(brute_force_expectation(seed_model, probs), rel=1e-12)


def test_predict_equals_expected_on_one_hot(seed_model):
    space = seed_model.space
    for arch in list(space.enumerate())[::17]:
        one_hot = {c.label: torch.nn.functional.one_hot(torch.tensor(c.values.index(arch[c.label])),
                                                        len(c.values)).double() for c in space.choices}
        assert float(seed_model.expected(one_hot)) == pytest.approx(seed_model.predict(arch), rel=1e-12)


def test_gradient_matches_finite_differences(seed_model):
    space = seed_model.space
    gen = torch.Generator().manual_seed(3)
    logits = [torch.randn(len(c.values), generator=gen, dtype=torch.float64, requires_grad=True)
              for c in space.choices]

    def f(*ls):
        return seed_model.expected({c.label: torch.softmax(lg, 0) for c, lg in zip(space.choices, ls, strict=True)})

    assert torch.autograd.gradcheck(f, tuple(logits), eps=1e-6, atol=1e-9, rtol=1e-6)


def test_expected_keeps_dtype_and_rejects_bad_probs(seed_model):
    space = seed_model.space
    probs = random_probs(space, torch.Generator().manual_seed(5), dtype=torch.float32)
    assert seed_model.expected(probs).dtype == torch.float32
    with pytest.raises(KeyError, match="C_o"):
        seed_model.expected({k: v for k, v in probs.items() if k != "C_o"})
    with pytest.raises(ValueError, match="shape"):
        seed_model.expected({**probs, "k": torch.ones(3) / 3})


def test_unit_tensors_reconstruct_predict(seed_model):
    space = seed_model.space
    terms = seed_model.unit_tensors()
    for arch in list(space.enumerate())[::31]:
        total = seed_model.c0
        for labels, w in terms:
            idx = tuple(space.choice(lab).values.index(arch[lab]) for lab in labels)
            total += float(w[idx])
        assert total == pytest.approx(seed_model.predict(arch), rel=1e-12)


def test_additive_is_the_plain_sum_and_uncalibrated_subtracts_overhead():
    space = get_space("seed-cnn")
    table = synthetic_table(space, seed=2)
    model, plain = LatencyModel(space, table), LatencyModel(space, table, calibrated=False)
    arch = next(space.enumerate())
    raw = [table.entries[u.key(arch)].median_ms for u in space.latency_units()]
    assert model.additive(arch) == pytest.approx(sum(raw))
    assert plain.predict(arch) == pytest.approx(table.overhead_ms + sum(r - table.overhead_ms for r in raw))
    assert model.calibrated and not plain.calibrated


@pytest.mark.parametrize("space_kwargs", [{}, {"depths": (1, 1, 1)}], ids=["mbconv", "mbconv-small"])
def test_min_and_max_latency_are_exact(space_kwargs):
    space = get_space("mbconv", **space_kwargs)
    model = LatencyModel(space, synthetic_table(space, seed=4))
    arch, ms = model.min_latency()
    assert ms == pytest.approx(model.predict(arch))
    if space.size <= 1000:
        values = [model.predict(a) for a in space.enumerate()]
        assert ms == pytest.approx(min(values))
        assert model.max_latency()[1] == pytest.approx(max(values))
    else:  # independent blocks: no single-block change can make it faster
        for c in space.choices:
            for v in c.values:
                assert model.predict({**arch, c.label: v}) >= ms - 1e-12


def test_min_latency_with_shared_labels_matches_enumeration(seed_model):
    values = [(seed_model.predict(a), a) for a in seed_model.space.enumerate()]
    arch, ms = seed_model.min_latency()
    assert ms == pytest.approx(min(v for v, _ in values))
    assert seed_model.predict(arch) == pytest.approx(ms)
