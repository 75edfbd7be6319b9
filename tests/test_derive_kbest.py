"""Exact k-best derivation: ``derive_k`` against brute force over small spaces (synthetic tables, no timing)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from _toy import TOY
from conftest_latency import synthetic_table

from hwnas.latency import LatencyModel
from hwnas.search.derive import BudgetError, _frontier, derive, derive_k
from hwnas.space import get_space

KS = (1, 3, 10, 5000)  # 5000: more than any of these spaces holds


def _model(name: str, **kwargs) -> LatencyModel:
    space = get_space(name, **kwargs)
    return LatencyModel(space, synthetic_table(space, seed=3))


# seed-cnn: one component of six labels (216 archs); toy: one component of two labels (4 archs; its fc
# unit's input width is c); mbconv with one block per stage: one one-label component per block (810 archs)
MODELS = {"seed-cnn": lambda: _model("seed-cnn"), "toy": lambda: _model(TOY),
          "mbconv-small": lambda: _model("mbconv", depths=(1, 1, 1))}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    model = MODELS[request.param]()
    return model, [(a, model.predict(a)) for a in model.space.enumerate()]


def _probs(space, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {c.label: torch.softmax(3 * torch.randn(len(c.values), generator=g, dtype=torch.float64), 0)
            for c in space.choices}


def _logp(space, probs, arch) -> float:
    return sum(math.log(float(probs[lab][space.choice(lab).values.index(v)])) for lab, v in arch.items())


def _brute(space, table, probs, budget, k, allowed=None) -> list[tuple[dict, float, float]]:
    ok = [(a, t, _logp(space, probs, a)) for a, t in table if budget is None or t <= budget]
    for lab, mask in (allowed or {}).items():
        ok = [r for r in ok if bool(mask[space.choice(lab).values.index(r[0][lab])])]
    return sorted(ok, key=lambda r: (-r[2], r[1], repr(sorted(r[0].items()))))[:k]


def _budgets(table) -> dict[str, float | None]:
    """Budgets midway between distinct predicted latencies, so no arch sits on the boundary."""
    lats = sorted({t for _, t in table})
    out: dict[str, float | None] = {"none": None, "loose": lats[-1] * 1.01}
    if len(lats) >= 2:
        out["middle"] = (lats[len(lats) // 2 - 1] + lats[len(lats) // 2]) / 2
    if len(lats) >= 4:
        out["tight"] = (lats[2] + lats[3]) / 2  # three distinct latencies meet it
    return out


def _check(got, want, budget) -> None:
    assert [a for a, _, _ in got] == [a for a, _, _ in want]
    assert [lp for _, _, lp in got] == pytest.approx([lp for _, _, lp in want], abs=1e-9)
    assert [t for _, t, _ in got] == pytest.approx([t for _, t, _ in want], abs=1e-12)
    assert len({tuple(a.items()) for a, _, _ in got}) == len(got)  # distinct archs
    assert all(x[2] >= y[2] for x, y in zip(got, got[1:], strict=False))  # best first
    assert budget is None or all(t <= budget for _, t, _ in got)


def test_derive_k_matches_brute_force(case):
    model, table = case
    space = model.space
    for seed in range(3):
        probs = _probs(space, seed)
        for name, budget in _budgets(table).items():
            for k in KS:
                got = derive_k(model, probs, budget, k)
                want = _brute(space, table, probs, budget, k)
                assert len(got) == min(k, len(want)), (name, k)
                _check(got, want, budget)
            if name == "tight" and len(table) == len({t for _, t in table}):  # three archs meet it
                assert len(derive_k(model, probs, budget, 10)) == 3


def test_derive_k_with_an_allowed_sub_space(case):
    model, table = case
    space = model.space
    rng = random.Random(0)
    allowed = {}
    for c in space.choices[:2]:  # keep a random non-empty subset of two labels' values
        keep = [rng.random() < 0.6 for _ in c.values]
        keep[rng.randrange(len(keep))] = True
        allowed[c.label] = torch.tensor(keep)
    sub = [r for r in table if all(allowed[lab][space.choice(lab).values.index(r[0][lab])] for lab in allowed)]
    for seed in range(3):
        probs = _probs(space, 10 + seed)
        for budget in _budgets(sub).values():
            for k in KS:
                got = derive_k(model, probs, budget, k, allowed=allowed)
                want = _brute(space, table, probs, budget, k, allowed)
                assert len(got) == min(k, len(want))
                _check(got, want, budget)
                assert derive(model, probs, budget, allowed=allowed) == got[0][:2]


def test_derive_is_derive_k_with_k_1(case):
    model, table = case
    for seed in range(4):
        probs = _probs(model.space, 20 + seed)
        for budget in _budgets(table).values():
            arch, pred = derive(model, probs, budget)
            (arch1, pred1, lp1), = derive_k(model, probs, budget)
            assert (arch, pred) == (arch1, pred1)
            assert lp1 == pytest.approx(_logp(model.space, probs, arch), abs=1e-9)


def test_infeasible_budget_raises_the_same_budget_error(case):
    model, table = case
    probs = _probs(model.space, 0)
    fast = model.min_latency()[1]
    assert fast == pytest.approx(min(t for _, t in table))
    for k in (1, 3):
        with pytest.raises(BudgetError, match=f"fastest predicted is {fast:.4f} ms") as got:
            derive_k(model, probs, fast * 0.5, k)
        with pytest.raises(BudgetError) as want:
            derive(model, probs, fast * 0.5)
        assert str(got.value) == str(want.value)
    lab = model.space.choices[0].label
    allowed = {lab: torch.tensor([i == 0 for i in range(len(model.space.choice(lab).values))])}
    with pytest.raises(BudgetError, match="no arch of the sub-space"):
        derive_k(model, probs, fast * 0.5, 3, allowed=allowed)


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3", None])
def test_k_must_be_a_positive_int(k):
    model = _model(TOY)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        derive_k(model, _probs(model.space, 0), None, k)


def test_results_are_reproducible(case):
    model, table = case
    probs = _probs(model.space, 5)
    budget = _budgets(table)["middle"]
    assert derive_k(model, probs, budget, 7) == derive_k(model, probs, budget, 7)


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_frontier_keeps_exactly_the_states_fewer_than_k_others_dominate(k):
    rng = random.Random(k)
    # coarse values give many ties in latency and log-prob
    states = [(rng.randrange(8) / 4, -rng.randrange(8) / 2, {"i": i}) for i in range(200)]
    kept = _frontier(states, 1.5, k)
    assert all(s[0] <= 1.5 for s in kept)
    ids = {s[2]["i"] for s in kept}
    for j, s in enumerate(kept):  # kept (in scan order): fewer than k kept states before it have log-prob >= its
        assert sum(1 for o in kept[:j] if o[1] >= s[1]) < k
    for s in states:
        if s[0] <= 1.5 and s[2]["i"] not in ids:  # dropped: k kept states dominate it
            assert sum(1 for o in kept if o[0] <= s[0] and o[1] >= s[1]) >= k
    if k == 1:  # the plain Pareto frontier: latency up, log-prob strictly up
        assert all(a[0] <= b[0] and a[1] < b[1] for a, b in zip(kept, kept[1:], strict=False))
    assert _frontier(states, 1.5, len(states) + 1) == sorted((s for s in states if s[0] <= 1.5),
                                                         key=lambda s: (s[0], -s[1]))
    assert _frontier(states, 1.5, k) == kept  # deterministic
