"""``hwnas latency validate``: predicted vs measured latency on held-out archs, side by side.

Held-out archs (another seed than calibration, calibration archs excluded while the space allows):
half uniform, half nearest the middle of the predicted latency range (the band where latency
constraints usually sit). Each is measured end to end with the table's protocol and compared with

* ``calibrated``: the ``LatencyModel`` as shipped (``c0`` + scaled unit terms);
* ``overhead_corrected``: ``o + sum_u (LUT_u - o)``, no fitted parameter;
* ``additive_baseline``: ``sum_u LUT_u``, the plain table.

Metrics (errors ``e_i = (pred_i - meas_i) / meas_i``): ``mape`` = mean |e| in %, ``within_5pct`` /
``within_10pct`` = share with |e| <= 5% / 10% (fraction), ``kendall_tau`` (tau-b), ``max_abs_pct_err``
in %, ``bias_pct`` = mean e in %, ``constraint_precision`` = among archs predicted <= target (the
median measured latency), the share whose measured latency is <= target (None when none is predicted).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HwnasError
from ..space import Arch, get_space
from .calibrate import measure_archs, refuse_foreign, sample_archs
from .model import LatencyModel
from .protocol import Protocol
from .table import load_table, now

ENUMERATE_LIMIT = 10_000  # spaces up to this size draw the middle band from all their archs
BAND = 0.1  # half-width of the middle band, as a share of the predicted latency range


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two sequences (ties handled), O(n^2)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    s, nx, ny = float((dx * dy)[iu].sum()), float(np.abs(dx)[iu].sum()), float(np.abs(dy)[iu].sum())
    return s / math.sqrt(nx * ny) if nx > 0 and ny > 0 else float("nan")


def metrics(pred: Sequence[float], meas: Sequence[float], target: float | None = None) -> dict[str, Any]:
    """Accuracy of predictions against measurements (see the module docstring for definitions)."""
    p, m = np.asarray(pred, dtype=float), np.asarray(meas, dtype=float)
    e = (p - m) / m
    target = float(np.median(m)) if target is None else target
    chosen = p <= target
    prec = float(np.mean(m[chosen] <= target)) if chosen.any() else None
    ae = np.abs(e)
    return {"n": int(len(m)), "mape": 100 * float(np.mean(ae)), "within_5pct": float(np.mean(ae <= 0.05 + 1e-9)),
            "within_10pct": float(np.mean(ae <= 0.10 + 1e-9)), "kendall_tau": kendall_tau(p, m),
            "max_abs_pct_err": 100 * float(np.max(ae)), "bias_pct": 100 * float(np.mean(e)),
            "constraint_precision": prec, "target_ms": target}


def validation_archs(model: LatencyModel, n: int, seed: int, exclude: Sequence[str] = ()) -> list[Arch]:
    """``n`` held-out archs: ``n - n//2`` uniform, ``n//2`` from the middle band of the predicted range.

    The band is ``mid +- BAND * (max - min)`` with ``mid = (min + max) / 2`` of the predicted latency
    (exact extremes). Candidates are every arch (small spaces) or ``50 n`` uniform draws (rejection
    sampling); in-band candidates are taken in random order, then, if too few, the nearest to the band.
    """
    space, rng = model.space, random.Random(seed)
    uniform = sample_archs(space, n - n // 2, rng, exclude)
    lo, hi = model.min_latency()[1], model.max_latency()[1]
    mid, half = (lo + hi) / 2, BAND * (hi - lo)
    taken = set(exclude) | {space.arch_id(a) for a in uniform}
    if space.size <= ENUMERATE_LIMIT:
        cands = list(space.enumerate())
    else:
        cands = [space.sample(rng) for _ in range(50 * n)]
    cands.sort(key=lambda a: (max(0.0, abs(model.predict(a) - mid) - half), rng.random()))
    band: list[Arch] = []
    for a in cands:
        if len(band) == n // 2:
            break
        if space.arch_id(a) not in taken:
            taken.add(space.arch_id(a))
            band.append(a)
    held = [a for a in cands if space.arch_id(a) not in set(exclude)] or cands
    for i in range(n // 2 - len(band)):  # small space exhausted: repeat the archs nearest the middle
        band.append(held[i % len(held)])
    return uniform + band


def validate_table(path: str | Path, samples: int = 200, seed: int = 1, protocol: Protocol | None = None,
                   batch: int = 8, progress: bool = True,
                   measure: Callable[..., list[float]] | None = None, runner: Any = None) -> dict[str, Any]:
    """Measure held-out archs end to end and score the predictors side by side.

    Args:
        path: a complete (ideally calibrated) table.
        samples: number of archs measured.
        seed: RNG seed of the validation archs; must differ from the calibration seed.
        protocol: timing knobs (default: the table's protocol).
        batch: archs per round-robin batch.
        progress: tqdm bar.
        measure: ``measure_archs``-compatible function (tests may pass a fake); default ``measure_archs`` at
            the table's precision (an int8 table: each arch quantised as export quantises it).
        runner: a ``runners.Runner`` that times the archs on its device (default: this host, in-process).

    Returns:
        ``{**metrics(calibrated), "additive_baseline": {...}, "overhead_corrected": {...}, "space",
        "table", "device", "n_unique", "seed", "archs": [{arch_id, measured_ms, predicted_ms, additive_ms}]}``.

    Raises:
        TableError: bad table. HwnasError: ``seed`` equals the calibration seed; the table is another
            device's (nothing is measured).
    """
    table = load_table(path, check_host=False)  # refuse_foreign below is stricter than the host warning
    space = get_space(table.space)
    cal = table.calibration or {}
    if cal and cal.get("seed") == seed:
        raise HwnasError(f"validation seed {seed} equals the calibration seed; pass another --seed so the "
                         "archs are held out")
    protocol = protocol or Protocol.from_dict(table.protocol)
    here = runner.fingerprint(protocol) if runner is not None else None
    refuse_foreign(table, path, "validate", protocol.threads, here)  # one device's timings say nothing of another
    model, plain = LatencyModel(space, table), LatencyModel(space, table, calibrated=False)
    archs = validation_archs(model, samples, seed, cal.get("arch_ids", ()))
    measure = measure or functools.partial(runner.measure_archs if runner is not None else measure_archs,
                                           precision=table.precision)
    meas = measure(space, archs, protocol, batch, progress, desc=f"validate {space.name}")
    pred = [model.predict(a) for a in archs]
    add = [model.additive(a) for a in archs]
    target = float(np.median(meas))
    report = metrics(pred, meas, target)
    report.update({
        "additive_baseline": metrics(add, meas, target),
        "overhead_corrected": metrics([plain.predict(a) for a in archs], meas, target),
        "calibrated": model.calibrated, "space": space.name, "table": str(path), "device": table.device,
        "protocol": protocol.to_dict(), "precision": table.precision, "seed": seed, "calibration_seed": cal.get("seed"),
        "n_unique": len({space.arch_id(a) for a in archs}), "date": now(),
        "archs": [{"arch_id": space.arch_id(a), "arch": a, "measured_ms": m, "predicted_ms": p, "additive_ms": s}
                  for a, m, p, s in zip(archs, meas, pred, add, strict=True)],
    })
    return report
