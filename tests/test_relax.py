"""Relaxations: the contract, the temperature schedule, and the sanity task with a known optimum."""

from __future__ import annotations

import pytest
import torch
from _toy import OPTIMUM, TOY

from hwnas.config import SearchConfig
from hwnas.relax import RELAXATIONS, Hard, Soft, make_relaxation
from hwnas.search import run_search
from hwnas.space import get_space


@pytest.mark.parametrize("name", RELAXATIONS.names())
def test_contract(name):
    space = get_space("seed-cnn")
    relax = make_relaxation(name, space)
    probs = relax.probs()
    assert set(probs) == set(space.labels)
    for lab, p in probs.items():
        assert p.shape == (len(space.choice(lab).values),)
        assert torch.isclose(p.sum(), torch.tensor(1.0))
    with torch.no_grad():
        relax.alpha["k"].copy_(torch.tensor([0.0, 3.0]))
    assert relax.derive()["k"] == 5
    ent = relax.entropies()
    assert ent["k"] < ent["n"]
    sample = relax.sample(torch.Generator().manual_seed(0))
    kinds = {type(s) for s in sample.choices.values()}
    assert kinds == ({Hard} if name == "single-path" else {Soft})


def test_gumbel_temperature_anneals_and_sharpens_samples():
    space = get_space("seed-cnn")
    relax = make_relaxation("gumbel", space, tau_max=5.0, tau_min=0.5)
    relax.set_progress(0.0)
    assert float(relax.tau) == pytest.approx(5.0)
    relax.set_progress(0.5)
    assert float(relax.tau) == pytest.approx(5.0 * 0.1 ** 0.5)
    relax.set_progress(1.0)
    assert float(relax.tau) == pytest.approx(0.5)
    gen = torch.Generator().manual_seed(0)
    relax.set_progress(0.0)
    hot = torch.stack([relax.sample(gen).choices["n"].weights.max() for _ in range(50)]).mean()
    relax.set_progress(1.0)
    cold = torch.stack([relax.sample(gen).choices["n"].weights.max() for _ in range(50)]).mean()
    assert cold > hot + 0.2


def test_single_path_samples_follow_probs():
    space = get_space("seed-cnn")
    relax = make_relaxation("single-path", space)
    with torch.no_grad():
        relax.alpha["act"].copy_(torch.tensor([0.0, torch.log(torch.tensor(3.0))]))  # p(tanh) = 0.75
    gen = torch.Generator().manual_seed(0)
    share = sum(relax.sample(gen).choices["act"].index for _ in range(2000)) / 2000
    assert share == pytest.approx(0.75, abs=0.04)


@pytest.mark.slow
@pytest.mark.parametrize("name", RELAXATIONS.names())
def test_sanity_task_every_relaxation_finds_the_known_optimum(name):
    for seed in (0, 1):
        cfg = SearchConfig(space=TOY, relaxation=name, epochs=6, warmup_epochs=1, seed=seed, threads=1)
        result = run_search(cfg, None, progress=False)
        assert result.arch == OPTIMUM, (seed, result.history[-1]["probs"])
        final = result.history[-1]["probs"]
        assert final["c"]["16"] > 0.5 and final["n"]["64"] > 0.5
