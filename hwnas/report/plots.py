"""The report's figures (matplotlib, Agg backend, PNG): one function per figure.

* ``pareto.png``: accuracy vs latency of every candidate, the front as a step line, the budgets.
* ``probs.png``: each label's choice probabilities over the epochs (stacked areas) for the best shard
  (the shard of the most accurate front entry; the only one for a single search); in a sweep every other
  shard gets its own ``probs-<key>.png``.
* ``latency.png``: E[T], the derived arch's predicted latency, the budget and lambda over the epochs,
  one panel per shard.
* ``predicted_vs_measured.png``: the latency table's prediction against the onnxruntime measurement.

Each PNG is written to a temp file and renamed, so a report folder never holds half a figure.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from .figset import Figures  # noqa: E402
from .load import (  # noqa: E402
    Run,
    Shard,
    interval,
    is_noisy,
    latency_ms,
    latency_source,
    measured_on,
    measurement,
    prediction_errors,
    seeds_of,
)

DPI = 120
FRONT, GREY, BUDGET = "tab:blue", "0.6", "tab:red"
ET, PRED, MEAS, LAM = "tab:blue", "tab:orange", "tab:green", "tab:purple"
BAND = 0.05  # the +-5% band of predicted vs measured


def save(fig: Figure, path: Path) -> Path:
    """Save ``fig`` as PNG atomically (temp file, then rename) and close it."""
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    tmp.replace(path)
    return path


def epochs_of(history: list[dict[str, Any]]) -> list[int]:
    """Epoch numbers as people count them (1 = after the first epoch)."""
    return [int(r.get("epoch", i)) + 1 for i, r in enumerate(history)]


def mark_warmup(ax: Axes, history: list[dict[str, Any]]) -> None:
    """A dotted vertical line where the warm-up (weights only) ends and architecture steps start."""
    warm = [e for e, r in zip(epochs_of(history), history, strict=True) if not r.get("arch_phase", True)]
    if warm:
        ax.axvline(max(warm), color="0.3", ls=":", lw=1)


# ---- pareto.png -------------------------------------------------------------------------------------
def plot_pareto(run: Run, path: Path) -> Path:
    """Accuracy (%) vs latency (ms) of every candidate; the front highlighted; budgets as dashed lines.

    Candidates with an ``accuracy_ci`` (``hwnas finalize``: mean of several seeds) get vertical error bars
    over their interval, and the y axis says which accuracy it is (from ``accuracy_kind``)."""
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    cands = run.with_latency
    front_ids = {(c.get("arch_id"), c.get("shard")) for c in run.front}
    others = [c for c in cands if (c.get("arch_id"), c.get("shard")) not in front_ids]
    if others:
        _scatter(ax, others, GREY, 40, f"dominated candidate ({len(others)})")
        _error_bars(ax, others, GREY, None)
    front = sorted(run.front, key=lambda c: latency_ms(c) or 0.0)
    xs, ys = [latency_ms(c) for c in front], [100 * c["accuracy"] for c in front]
    if all(a <= b for a, b in zip(ys, ys[1:], strict=False)):
        ax.step(xs, ys, where="post", color=FRONT, lw=1.5, zorder=2)
    else:  # a front judged by intervals need not rise: join the points instead of drawing steps
        ax.plot(xs, ys, color=FRONT, lw=1, ls=":", zorder=2)
    _scatter(ax, front, FRONT, 70, f"Pareto front ({len(front)})", zorder=3)
    _error_bars(ax, front, FRONT, interval_label(cands))
    _budget_lines(ax, sorted({float(c["target_latency_ms"]) for c in run.candidates
                              if c.get("target_latency_ms") is not None}))
    ax.margins(x=0.08, y=0.12)
    _annotate_ids(ax, front, xs, ys)
    device = _device(run)
    predicted_only = any(latency_source(c) == "predicted" for c in cands)
    if predicted_only:
        ax.scatter([], [], facecolors="none", edgecolors="k", label="hollow: predicted only (not measured)")
    _mark_noisy(ax, cands)
    ax.set_xlabel(axis_label(cands, device))
    ax.set_ylabel(accuracy_label(run.front + cands), fontsize=9)
    kind = _kind(run.front + run.candidates) or "accuracy"
    head = (f"Accuracy vs latency: {len(cands)} candidates, {len(front)} on the Pareto front" if run.kind == "sweep"
            else "Accuracy vs latency of the derived arch (one search; sweeps over --targets give a front)")
    ax.set_title(f"{head}\n({kind})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save(fig, path)


def interval_label(cands: list[dict[str, Any]]) -> str:
    """The legend entry of the error bars: ``95% interval of the mean (3 seeds)``."""
    kind = _kind(cands) or ""
    pct = re.search(r"(\d+(?:\.\d+)?)\s*%", kind)
    seeds = sorted({n for c in cands if interval(c) and (n := seeds_of(c))})
    n = f" ({'/'.join(map(str, seeds))} seeds)" if seeds else ""
    return f"{pct.group(1) if pct else 95}% interval of the mean{n}"


def accuracy_label(cands: list[dict[str, Any]]) -> str:
    """The y axis: which accuracy (the head of ``accuracy_kind``, e.g. ``test accuracy``), in %, and when the
    candidates carry intervals, of how many seeds and which interval the bars show."""
    kind = _kind(cands)
    head = re.split(r"[,(;]| with | after | from | of the ", kind)[0].strip() if kind else ""
    head = head or "accuracy"
    if not any(interval(c) for c in cands):
        return f"{head} (%)"
    seeds = sorted({n for c in cands if (n := seeds_of(c))})
    mean = f"mean of {'/'.join(map(str, seeds))} seeds" if seeds else "mean over seeds"
    return f"{head} (%, {mean}; bars: {interval_label(cands).split(' of the mean')[0]})"


def _kind(cands: list[dict[str, Any]]) -> str | None:
    """The first ``accuracy_kind`` among ``cands`` (the front's first when it leads the list), or None."""
    return next((str(c["accuracy_kind"]) for c in cands if c.get("accuracy_kind")), None)


def _error_bars(ax: Axes, cands: list[dict[str, Any]], color: str, label: str | None) -> None:
    """Vertical bars from ``lo`` to ``hi`` of each candidate's accuracy interval (none without one)."""
    pts = [(latency_ms(c), 100 * c["accuracy"], iv) for c in cands if (iv := interval(c))]
    if not pts:
        return
    ys = [y for _, y, _ in pts]
    err = [[max(0.0, y - 100 * lo) for _, y, (lo, _) in pts], [max(0.0, 100 * hi - y) for _, y, (_, hi) in pts]]
    ax.errorbar([x for x, _, _ in pts], ys, yerr=err, fmt="none", ecolor=color, elinewidth=1.2, capsize=3,
                alpha=0.9 if color == FRONT else 0.6, zorder=2.5, label=label)


def axis_label(cands: list[dict[str, Any]], device: str | None) -> str:
    """``measured latency on HOST (ms)`` / ``predicted latency on DEVICE (ms)`` (both when mixed)."""
    sources = {latency_source(c) for c in cands} - {None}
    on = f" on {device}" if device else ""
    if sources == {"predicted"}:
        foreign = device and any(c.get("latency_source") == "predicted" for c in cands)
        return (f"predicted latency{on} (ms)" + (f"; not measured: this host is not {device}" if foreign
                                                 else ", latency table; nothing was measured"))
    label = f"measured latency on {device or _host(cands)} (ms, onnxruntime, batch 1)"
    return label + (f"; hollow = predicted{on}" if "predicted" in sources else "")


def _host(cands: list[dict[str, Any]]) -> str:
    """The host a measurement names (its CPU model), else ``this host``."""
    for c in cands:
        host = measurement(c).get("host")
        if isinstance(host, dict) and host.get("cpu_model"):
            return str(host["cpu_model"])
        if isinstance(host, str) and host:
            return host
    return "this host"


def _mark_noisy(ax: Axes, cands: list[dict[str, Any]], x: str | None = None) -> None:
    """A black cross over each candidate whose measurement is marked noisy (trials disagree)."""
    noisy = [c for c in cands if is_noisy(c)]
    if noisy:
        xs = [float(c[x]) if x else latency_ms(c) for c in noisy]
        ys = [float(c["measured_latency_ms"]) if x else 100 * c["accuracy"] for c in noisy]
        ax.scatter(xs, ys, marker="x", color="k", s=40, zorder=5, label=f"noisy measurement ({len(noisy)})")


def _scatter(ax: Axes, cands: list[dict[str, Any]], color: str, size: float, label: str, zorder: int = 2) -> None:
    """Filled markers for measured latencies, hollow ones for predicted-only."""
    meas = [c for c in cands if latency_source(c) == "measured"]
    pred = [c for c in cands if latency_source(c) != "measured"]
    ax.scatter([latency_ms(c) for c in meas], [100 * c["accuracy"] for c in meas], s=size, color=color,
               zorder=zorder, label=label if meas or not pred else None)
    if pred:
        ax.scatter([latency_ms(c) for c in pred], [100 * c["accuracy"] for c in pred], s=size, facecolors="none",
                   edgecolors=color, zorder=zorder, label=None if meas else label)


def _budget_lines(ax: Axes, budgets: list[float]) -> None:
    """Vertical dashed lines at each budget, labelled on a top axis (outside the data)."""
    for i, b in enumerate(budgets):
        ax.axvline(b, color=BUDGET, ls="--", lw=1, alpha=0.8, label="latency budget" if i == 0 else None)
    if budgets:
        top = ax.secondary_xaxis("top")
        top.set_xticks(budgets, labels=[f"{b:g} ms" for b in budgets], fontsize=8, color=BUDGET)
        top.tick_params(axis="x", colors=BUDGET)


def _annotate_ids(ax: Axes, front: list[dict[str, Any]], xs: list[float], ys: list[float]) -> None:
    """Arch id next to each front point, on the left of points in the right third of the axes."""
    lo, hi = ax.get_xlim()
    for c, x, y in zip(front, xs, ys, strict=True):
        right = (x - lo) / (hi - lo) > 0.67 if hi > lo else False
        ax.annotate(c.get("arch_id", "?"), (x, y), xytext=(-6 if right else 6, 6), textcoords="offset points",
                    fontsize=8, color=FRONT, ha="right" if right else "left")


def _device(run: Run) -> str | None:
    return run.device


# ---- probs.png ---------------------------------------------------------------------------------------
def plot_probs(shard: Shard, path: Path, note: str = "") -> Path:
    """One panel per label: the probability of each of its values over the epochs (stacked, sums to 1)."""
    hist = [r for r in shard.history if r.get("probs")]
    labels = list(hist[0]["probs"])
    ncols = min(3, len(labels))
    nrows = math.ceil(len(labels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 2.7 * nrows), layout="constrained",
                             squeeze=False, sharex=True)
    x = epochs_of(hist)
    for i, label in enumerate(labels):
        ax = axes[i // ncols][i % ncols]
        _probs_panel(ax, hist, x, label)
        if i % ncols == 0:
            ax.set_ylabel("probability")
        if i // ncols == nrows - 1 or i + ncols >= len(labels):
            ax.set_xlabel("epoch")
    for j in range(len(labels), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.suptitle(f"Choice probabilities per label, shard {shard.key}{note}\n"
                 "(stacked: each band is one value; dotted line = end of warm-up, architecture steps start)",
                 fontsize=10)
    return save(fig, path)


def _probs_panel(ax: Axes, hist: list[dict[str, Any]], x: list[int], label: str) -> None:
    values = list(hist[-1]["probs"][label])
    ys = [[float(r["probs"].get(label, {}).get(v, 0.0)) for r in hist] for v in values]
    ax.stackplot(x, ys, labels=[str(v) for v in values], alpha=0.85)
    mark_warmup(ax, hist)
    h = [r.get("entropy", {}).get(label) for r in (hist[0], hist[-1])]
    ent = f"  (entropy {h[0]:.2f} → {h[1]:.2f} nats)" if None not in h else ""
    ax.set_title(f"{label}{ent}", fontsize=9)
    ax.set_ylim(0, 1)
    if len(x) > 1:
        ax.set_xlim(min(x), max(x))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title=label, title_fontsize=8,
              frameon=False, reverse=True)


# ---- latency.png -------------------------------------------------------------------------------------
def plot_latency(shards: list[Shard], path: Path) -> Path:
    """One panel per shard: E[T] and the derived arch's predicted latency (ms) vs epoch, the budget as a
    horizontal line, the final measured latency as a star, lambda on a twin axis."""
    ncols = min(3, len(shards))
    nrows = math.ceil(len(shards) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(5.2 * ncols, 8.0), 3.4 * nrows + 0.8),
                             layout="constrained", squeeze=False)
    for i, s in enumerate(shards):
        _latency_panel(axes[i // ncols][i % ncols], s)
    for j in range(len(shards), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    handles = [Line2D([], [], color=ET, marker="o", label="E[T] (expected latency of the distribution)"),
               Line2D([], [], color=PRED, marker="s", ls="--", label="predicted latency of the derived arch"),
               Line2D([], [], color=MEAS, marker="*", ls="", ms=12, label="measured latency of the final arch"),
               Line2D([], [], color=BUDGET, ls="--", label="budget"),
               Line2D([], [], color=LAM, marker="^", ls=":", label="λ (right axis)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3 if ncols > 1 else 2, fontsize=8, frameon=False)
    fig.suptitle("Latency over the search (dotted grey line = end of warm-up)", fontsize=10)
    return save(fig, path)


def _latency_panel(ax: Axes, s: Shard) -> None:
    hist = [r for r in s.history if "expected_latency_ms_end" in r]
    x = epochs_of(hist)
    ax.plot(x, [r["expected_latency_ms_end"] for r in hist], color=ET, marker="o")
    pred = [(e, r["predicted_latency_ms"]) for e, r in zip(x, hist, strict=True) if r.get("predicted_latency_ms") is not None]
    if pred:
        ax.plot([e for e, _ in pred], [v for _, v in pred], color=PRED, marker="s", ls="--")
    final = s.candidate or s.arch
    meas = final.get("measured_latency_ms") if latency_source(final) == "measured" else None
    if meas is not None and x:
        ax.plot([x[-1]], [meas], color=MEAS, marker="*", ls="", ms=12, zorder=4)
    if s.target_ms is not None:
        ax.axhline(s.target_ms, color=BUDGET, ls="--", lw=1)
    mark_warmup(ax, hist)
    lam = [r.get("lambda_end") for r in hist]
    if all(v is not None for v in lam) and (s.target_ms is not None or len(set(lam)) > 1):
        tw = ax.twinx()
        tw.plot(x, lam, color=LAM, marker="^", ls=":")
        tw.set_ylabel("λ (dimensionless)", color=LAM)
        tw.tick_params(axis="y", colors=LAM)
        tw.set_ylim(bottom=0, top=max(lam) * 1.15 if max(lam) > 0 else 1.0)
    budget = f", budget {s.target_ms:g} ms" if s.target_ms is not None else ", no budget"
    ax.set_title(f"shard {s.key}{budget}", fontsize=9)
    ax.set_xlabel("epoch")
    device = final.get("latency_device") or s.arch.get("device")  # the table's device: E[T] is predicted for it
    ax.set_ylabel(f"latency on {device} (ms)" if device else "latency (ms)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


# ---- predicted_vs_measured.png -----------------------------------------------------------------------
def plot_predicted_vs_measured(cands: list[dict[str, Any]], path: Path, device: str | None = None) -> Path:
    """Scatter of predicted (x) vs measured (y) latency in ms with y = x and a +-5% band (log axes when
    the latencies span more than 10x, so that the band keeps its width). ``cands``: measured on ``device``,
    the table's device (``load.measured_on``)."""
    pts = [(float(c["predicted_latency_ms"]), float(c["measured_latency_ms"])) for c in cands]
    lo = min(min(p) for p in pts) * 0.8
    hi = max(max(p) for p in pts) * 1.2
    fig, ax = plt.subplots(figsize=(5.8, 5.2), layout="constrained")
    if hi / lo > 10:
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
    line = [lo * (hi / lo) ** (i / 50) for i in range(51)]
    ax.fill_between(line, [v * (1 - BAND) for v in line], [v * (1 + BAND) for v in line], color="0.85",
                    label=f"±{BAND:.0%} of the prediction")
    ax.plot(line, line, color="k", lw=1, label="y = x (perfect prediction)")
    ax.scatter([p for p, _ in pts], [m for _, m in pts], color=FRONT, zorder=3, label="candidate (arch)")
    med = statistics.median(prediction_errors(cands))
    ax.set_title(f"Predicted vs measured latency: median |error| {med:.1%} (n = {len(pts)})", fontsize=10)
    on = f" on {device}" if device else ""
    _mark_noisy(ax, cands, x="predicted_latency_ms")
    ax.set_xlabel(f"predicted latency{on} (ms, latency table)")
    ax.set_ylabel(f"measured latency on {device or _host(cands)} (ms, onnxruntime)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_box_aspect(1)  # same limits on both axes: y = x is the diagonal
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=8)
    _label_archs(ax, cands)
    return save(fig, path)


def _label_archs(ax: Axes, cands: list[dict[str, Any]], limit: int = 15) -> None:
    """One label per arch (the shards that found it) beside its first point (to the left of points in the
    right third of the axes); none past ``limit`` archs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cands:
        groups.setdefault(str(c.get("arch_id")), []).append(c)
    if len(groups) > limit:
        return
    for group in groups.values():
        xy = (float(group[0]["predicted_latency_ms"]), float(group[0]["measured_latency_ms"]))
        right = ax.transAxes.inverted().transform(ax.transData.transform(xy))[0] > 0.67
        ax.annotate(", ".join(str(g.get("shard", "")) for g in group), xy, xytext=(-8 if right else 8, -4),
                    textcoords="offset points", fontsize=8, ha="right" if right else "left", va="top")


# ---- all of them -------------------------------------------------------------------------------------
def write_figures(run: Run, out: Path) -> Figures:
    """Write every figure the run's data allows into ``out``; say why for each one skipped."""
    figs = Figures()
    no_table = ("the search ran without a latency table (no --target-ms, --hw-loss or --latency-table), "
                "so there is no latency to plot")
    if run.with_latency and run.front:
        figs.paths["pareto"] = plot_pareto(run, out / "pareto.png")
    elif not run.candidates:
        figs.skipped["pareto"] = "no search has finished yet, so there is no candidate to plot"
    else:
        figs.skipped["pareto"] = no_table
    _write_probs(run, out, figs)
    lat = [s for s in run.shards if s.has_latency]
    if lat:
        figs.paths["latency"] = plot_latency(lat, out / "latency.png")
    else:
        figs.skipped["latency"] = no_table
    both = measured_on(run.candidates, run.device)  # never another device's timings against this table
    if both:
        figs.paths["predicted_vs_measured"] = plot_predicted_vs_measured(both, out / "predicted_vs_measured.png",
                                                                         run.device)
    elif not run.with_latency:
        figs.skipped["predicted_vs_measured"] = no_table
    elif any(c.get("latency_source") == "predicted" for c in run.candidates):
        dev = run.device or "another device"
        figs.skipped["predicted_vs_measured"] = (f"the latencies are predictions for {dev} (not measured: this "
                                                 f"host is not {dev}), so there is no measurement to compare")
    else:
        figs.skipped["predicted_vs_measured"] = "no candidate has both a predicted and a measured latency"
    return figs


def _write_probs(run: Run, out: Path, figs: Figures) -> None:
    best = run.best_shard()
    if best is None or not any(r.get("probs") for r in best.history):
        figs.skipped["probs"] = "the history records no choice probabilities yet"
        return
    note = " (the most accurate front entry)" if run.kind == "sweep" else ""
    figs.paths["probs"] = plot_probs(best, out / "probs.png", note)
    for s in run.shards:
        if s is not best and any(r.get("probs") for r in s.history):
            figs.paths[f"probs-{s.key}"] = plot_probs(s, out / f"probs-{s.key}.png")
