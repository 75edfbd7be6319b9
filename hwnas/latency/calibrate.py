"""``hwnas latency calibrate``: fit ``c0``, per-unit scales and boundary costs on end-to-end measurements.

Model (see ``model.py``): ``T(x) = c0 + sum_u a_u (LUT[u, x_u] - o) + b_u B_u[x_u]``. With ``N``
sampled archs measured end to end (``y_i``, same protocol as the table) the fit minimises the relative
squared error with a ridge pull of every scale towards 1 and every boundary cost towards 0::

    sum_i ((c0 + sum_u a_u d_iu + b_u B_iu - y_i) / y_i)^2 + lam * sum_j s_j^2 (theta_j - prior_j)^2

with ``d_iu = LUT[u, x_iu] - o`` and ``s_j`` the RMS of column ``j`` (so ``lam`` is scale-free). Units
without labels keep ``a_u = 1, b_u = 0``: their term is a constant, folded into ``c0``. ``lam`` is picked
by leave-one-out cross-validation on a log grid, so a parameter leaves its prior only when that predicts
held-out archs better. The residual stays linear in per-unit tensors, so ``E[T]`` remains exact.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import HwnasError
from ..space import Arch, SearchSpace, get_space
from .features import boundary_elements
from .measure import to_model
from .model import LatencyModel
from .protocol import Protocol
from .quiet import measure_batch, pinned
from .table import LatencyTable, check_calibration, load_table, now, save_table

LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e4)


def foreign_reasons(table: LatencyTable, threads: int = 1, here: dict[str, Any] | None = None) -> list[str]:
    """Why ``table`` was not measured on this host (or the device whose fingerprint is ``here``) with
    ``threads`` (``fingerprint.mismatches``; empty: it was, so this host or that runner may time models for it)."""
    from .fingerprint import mismatches

    return list(mismatches(table, threads, here=here))


def devicekit_fix(space: str, device: str) -> str:
    """How to time models on another device: a runner (``hwnas profile --runner``) or the device kit."""
    return (f"time it on that device: `hwnas profile --space {space} --runner ssh://user@host --device {device}` "
            "(or adb:SERIAL, offline:FOLDER; see `hwnas profile --help`) measures, calibrates and validates "
            f"there; or `hwnas devicekit export --space {space} kit/`, run kit/run_kit.py there, then "
            f"`hwnas devicekit import kit/results.json --device {device}`")


def refuse_foreign(table: LatencyTable, path: str | Path, action: str, threads: int = 1,
                   here: dict[str, Any] | None = None) -> None:
    """Raise ``HwnasError`` (one line) when ``table`` belongs to another device than this host (or than the
    runner's device, fingerprint ``here``): ``action`` (calibrate, validate) would time the wrong device."""
    why = foreign_reasons(table, threads, here)
    if why:
        device = table.device.get("name", "?")
        raise HwnasError(f"{action} refused: latency table {path} is of device {device!r}, not this host "
                         f"({why[0]}); this host's timings say nothing about {device!r}, so nothing was "
                         f"measured or written; {devicekit_fix(table.space, device)}")


def sample_archs(space: SearchSpace, n: int, rng: random.Random, exclude: Sequence[str] = ()) -> list[Arch]:
    """``n`` random archs, distinct while the space (minus ``exclude`` ids) allows, then with repeats."""
    excluded, seen, out = set(exclude), set(), []
    budget = 50 * n + 1000
    while len(out) < n and budget > 0:
        budget -= 1
        a = space.sample(rng)
        aid = space.arch_id(a)
        if aid in excluded or aid in seen:
            continue
        seen.add(aid)
        out.append(a)
    while len(out) < n:  # small space exhausted: repeat archs (each is measured again)
        a = space.sample(rng)
        if space.arch_id(a) not in excluded or len(excluded) >= space.size:
            out.append(a)
    return out


def measure_archs(space: SearchSpace, archs: Sequence[Arch], protocol: Protocol, batch: int = 8,
                  progress: bool = True, desc: str = "measure", precision: str = "fp32") -> list[float]:
    """End-to-end latency (ms) of each arch's plain network, round-robin in batches (tqdm bar with ETA),
    on one quiet core (``quiet.pinned``, ``quiet.measure_batch``); ``precision`` ``int8`` times each network
    quantised as ``hwnas export --int8`` quantises it (``measure.to_model``)."""
    out: list[float] = []
    with tqdm(total=len(archs), desc=desc, unit="arch", disable=not progress, dynamic_ncols=True) as bar, \
            pinned() as core:
        for s in range(0, len(archs), batch):
            chunk = archs[s:s + batch]
            models = [to_model(space.arch_id(a), space.build(a), space.input_shape, precision) for a in chunk]
            out += [r.median_ms for r in measure_batch(models, protocol, core)]
            bar.update(len(chunk))
    return out


def _design(model: LatencyModel, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Columns ``[d_u..., B_u...]`` of labelled units ``(N, 2U)``, the constant part ``(N,)``, unit names."""
    units = [u for u in model.units if u.labels]
    bounds = {u.name: boundary_elements(model.space, u) for u in units}
    raw = np.array([model.unit_values(a) for a in archs]) - model.overhead_ms  # (N, all units)
    labelled = [i for i, u in enumerate(model.units) if u.labels]
    const = np.delete(raw, labelled, axis=1).sum(axis=1)
    b = np.array([[bounds[u.name][model.position(u, a)] for u in units] for a in archs]).reshape(len(archs), -1)
    return np.c_[raw[:, labelled], b], const, [u.name for u in units]


def _solve(x: np.ndarray, r: np.ndarray, w: np.ndarray, prior: np.ndarray, lam: float) -> np.ndarray:
    """Weighted ridge: columns ``[1, x]``, unknowns ``[c0, theta]``, penalty ``lam * s_j^2 (theta - prior)^2``."""
    a = np.c_[np.ones(len(r)), x] * w[:, None]
    scale = np.sqrt(np.mean(a[:, 1:] ** 2, axis=0)) + 1e-12
    pen = np.c_[np.zeros((len(prior), 1)), np.diag(np.sqrt(lam) * scale)]
    coef, *_ = np.linalg.lstsq(np.r_[a, pen], np.r_[r * w, np.sqrt(lam) * scale * prior], rcond=None)
    return coef


def fit_calibration(model: LatencyModel, archs: Sequence[Arch], measured: Sequence[float],
                    lambdas: Sequence[float] = LAMBDAS) -> dict[str, Any]:
    """Fit ``c0``, per-unit scales and boundary costs of an uncalibrated ``model`` to measured latencies.

    Args:
        model: ``LatencyModel(space, table, calibrated=False)``.
        archs: the measured archs.
        measured: their end-to-end latencies in ms.
        lambdas: ridge strengths tried by leave-one-out cross-validation.

    Returns:
        ``{"c0", "scales", "boundary", "ridge", "loo_mape", "train_mape", "offset_only_loo_mape"}``
        (MAPE in %; ``boundary`` in ms per 1e4 boundary elements).

    Raises:
        HwnasError: fewer than 3 archs.
    """
    y = np.asarray(measured, dtype=np.float64)
    if len(y) < 3:
        raise HwnasError(f"calibration needs at least 3 measured archs, got {len(y)}; pass --samples 3 or more")
    x, const, names = _design(model, archs)
    r, w = y - const, 1.0 / y
    prior = np.r_[np.ones(len(names)), np.zeros(len(names))]

    def loo(lam: float) -> float:
        errs = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            coef = _solve(x[keep], r[keep], w[keep], prior, lam)
            errs.append(abs(coef[0] + x[i] @ coef[1:] - r[i]) / y[i])
        return 100 * float(np.mean(errs))

    n = len(names)
    # only ridge strengths whose fit keeps every per-unit scale > 0 (a scale <= 0 predicts a unit as free or
    # negative; few or noisy samples can fit one); the offset-only fit (scales 1) is always there
    fits = {lam: _solve(x, r, w, prior, lam) for lam in (*lambdas, 1e12)}
    scores = {lam: loo(lam) for lam, c in fits.items() if float(np.min(c[1:n + 1], initial=1.0)) > 0}
    best = min(scores, key=lambda k: (scores[k], -k))  # ties: the stronger pull towards the prior
    coef = fits[best]
    pred = coef[0] + x @ coef[1:] + const
    return {"c0": float(coef[0]), "scales": {k: float(v) for k, v in zip(names, coef[1:n + 1], strict=True)},
            "boundary": {k: float(v) for k, v in zip(names, coef[n + 1:], strict=True)},
            "ridge": best, "loo_mape": scores[best], "train_mape": 100 * float(np.mean(np.abs(pred - y) / y)),
            "offset_only_loo_mape": loo(1e12)}


def calibration_archs(additive: LatencyModel, samples: int, seed: int) -> list[Arch]:
    """The calibration archs: the fastest and the slowest arch by the additive table, then ``samples - 2``
    random ones (all random below 8 samples). With the ends in the fit, predictions for the extremes (which
    the table probe and budgets at the ends of the range rely on) are interpolated, not extrapolated."""
    space = additive.space
    if samples < 8:
        return sample_archs(space, samples, random.Random(seed))
    ends = [additive.min_latency()[0], additive.max_latency()[0]]
    rest = sample_archs(space, samples - len(ends), random.Random(seed), exclude=[space.arch_id(a) for a in ends])
    return [*ends, *rest]


def calibrate_table(path: str | Path, samples: int = 64, seed: int = 0, protocol: Protocol | None = None,
                    space: SearchSpace | None = None, batch: int = 8, progress: bool = True,
                    runner: Any = None) -> dict[str, Any]:
    """Measure ``samples`` random archs end to end, fit the calibration and store it in the table.

    Args:
        path: a complete table; it is rewritten atomically with its ``calibration`` block.
        samples: number of calibration archs.
        seed: RNG seed of the calibration archs (validation uses another one, so its archs are held out).
        protocol: timing knobs (default: the table's own protocol, so both measure the same statistic).
        space: the space (default: the registered space the table names).
        batch: archs per round-robin batch.
        progress: tqdm bar.
        runner: a ``runners.Runner`` that times the archs on its device (default: this host, in-process).

    Returns:
        The calibration block written (``c0``, ``scales``, fit scores, the archs' ids, ...).

    Raises:
        TableError: the table is missing, corrupted, incomplete or of another space (nothing is written).
        HwnasError: the table is another device's (``foreign_reasons``): nothing is measured or written.
    """
    # the old block (if any) is replaced; refuse_foreign below checks the host more strictly than a warning
    table: LatencyTable = load_table(path, space, check_host=False, calibration=False)
    space = space or get_space(table.space)
    protocol = protocol or Protocol.from_dict(table.protocol)
    here = runner.fingerprint(protocol) if runner is not None else None
    refuse_foreign(table, path, "calibrate", protocol.threads, here)  # never one device's timings in another's table
    additive = LatencyModel(space, table, calibrated=False)
    archs = calibration_archs(additive, samples, seed)
    measure = runner.measure_archs if runner is not None else measure_archs
    measured = measure(space, archs, protocol, batch, progress, desc=f"calibrate {space.name}",
                       precision=table.precision)
    block = fit_calibration(additive, archs, measured)
    block.update({"method": "c0 + per-unit scale + per-unit boundary cost, relative-error ridge (LOO-chosen)",
                  "overhead_ms": table.overhead_ms, "n_samples": samples, "seed": seed, "date": now(),
                  "protocol": protocol.to_dict(), "arch_ids": [space.arch_id(a) for a in archs],
                  "measured_ms": measured})
    check_calibration(block, f"the new calibration of {path}", "the table was not changed; measure more archs "
                      "(--samples) on a quieter machine")
    table = load_table(path, space, check_host=False, calibration=False)  # re-read: write over what is on disk
    table.calibration = block
    save_table(table, path)
    return block
