"""Calibration fit and validation statistics on synthetic data (no timing involved)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest_latency import synthetic_table

from hwnas.errors import HwnasError
from hwnas.latency import LatencyModel, fit_calibration, metrics
from hwnas.latency.calibrate import sample_archs
from hwnas.latency.features import boundary_elements
from hwnas.latency.validate import kendall_tau, validation_archs
from hwnas.space import get_space


@pytest.mark.parametrize("name", ["seed-cnn", "mbconv"])
def test_fit_recovers_a_model_it_can_represent(name):
    space = get_space(name)
    truth_table = synthetic_table(space, seed=3, calibrated=False)
    truth_table.calibration = {"c0": 0.003, "scales": {u.name: 0.9 + 0.05 * i for i, u in
                                                        enumerate(space.latency_units()) if u.labels},
                               "boundary": {u.name: -0.001 for u in space.latency_units() if u.labels}}
    truth = LatencyModel(space, truth_table)
    archs = sample_archs(space, 60, random.Random(0))
    cal = fit_calibration(LatencyModel(space, truth_table, calibrated=False), archs, [truth.predict(a) for a in archs])
    assert cal["train_mape"] < 0.5 and cal["loo_mape"] < 1.0
    fitted_table = synthetic_table(space, seed=3, calibrated=False)
    fitted_table.calibration = cal
    fitted = LatencyModel(space, fitted_table)
    for a in sample_archs(space, 20, random.Random(9)):
        assert fitted.predict(a) == pytest.approx(truth.predict(a), rel=0.01)


def test_calibrated_expectation_stays_exact_with_boundary_terms():
    space = get_space("mbconv", depths=(1, 1, 1))
    table = synthetic_table(space, seed=5)
    table.calibration["boundary"] = {u.name: 0.002 for u in space.latency_units() if u.labels}
    model = LatencyModel(space, table)
    gen = torch.Generator().manual_seed(1)
    probs = {c.label: torch.softmax(torch.randn(len(c.values), generator=gen, dtype=torch.float64), 0)
             for c in space.choices}
    brute = sum(model.predict(a) * float(np.prod([float(probs[c.label][c.values.index(a[c.label])])
                                                  for c in space.choices])) for a in space.enumerate())
    assert float(model.expected(probs)) == pytest.approx(brute, rel=1e-12)


def test_boundary_feature_is_zero_for_identity_units():
    space = get_space("mbconv")
    unit = next(u for u in space.latency_units() if u.name == "b0")
    feats = boundary_elements(space, unit)
    values = space.choice("b0").values
    assert feats[values.index("skip")] == 0 and all(feats[i] > 0 for i, v in enumerate(values) if v != "skip")


def test_fit_needs_three_archs():
    space = get_space("seed-cnn")
    model = LatencyModel(space, synthetic_table(space, calibrated=False))
    with pytest.raises(HwnasError, match="at least 3"):
        fit_calibration(model, list(space.enumerate())[:2], [0.1, 0.2])


def test_metrics_on_known_numbers():
    meas = [1.0, 2.0, 3.0, 4.0]
    pred = [1.04, 2.2, 2.85, 4.0]
    m = metrics(pred, meas)
    assert m["mape"] == pytest.approx(100 * (0.04 + 0.1 + 0.05 + 0) / 4)
    assert m["within_5pct"] == 0.75 and m["within_10pct"] == 1.0
    assert m["max_abs_pct_err"] == pytest.approx(10.0)
    assert m["bias_pct"] == pytest.approx(100 * (0.04 + 0.1 - 0.05) / 4)
    assert m["kendall_tau"] == pytest.approx(1.0)
    assert m["target_ms"] == 2.5 and m["constraint_precision"] == 1.0
    assert metrics([3.0, 1.0], [1.0, 3.0])["constraint_precision"] == 0.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_validation_archs_are_held_out_and_half_from_the_middle():
    space = get_space("mbconv")
    model = LatencyModel(space, synthetic_table(space, seed=8))
    calib = sample_archs(space, 40, random.Random(0))
    excluded = [space.arch_id(a) for a in calib]
    archs = validation_archs(model, 40, seed=1, exclude=excluded)
    assert len(archs) == 40 and not {space.arch_id(a) for a in archs} & set(excluded)
    lo, hi = model.min_latency()[1], model.max_latency()[1]
    mid = [abs(model.predict(a) - (lo + hi) / 2) / (hi - lo) for a in archs[20:]]
    assert max(mid) <= 0.1 + 1e-9
    small = get_space("seed-cnn")
    seed_model = LatencyModel(small, synthetic_table(small))
    held = validation_archs(seed_model, 200, seed=1, exclude=[small.arch_id(a) for a in list(small.enumerate())[:50]])
    assert len(held) == 200 and all(small.arch_id(a) not in
                                    {small.arch_id(b) for b in list(small.enumerate())[:50]} for a in held)
