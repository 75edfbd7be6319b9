"""``report.md``: run summary, Pareto table, figures, cost per shard, and the search trend in sentences."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..search.pareto import other_targets, target_of
from .figset import FIGURE_NAMES, Figures
from .load import (
    Run,
    Shard,
    interval,
    is_noisy,
    latency_ms,
    latency_source,
    prediction_errors,
    seeds_of,
    source_label,
)

DECIDED = 0.9  # a label is decided when its most probable value holds at least this probability

CAPTIONS = {
    "pareto": "Accuracy vs latency: every candidate (grey), the Pareto front (blue step line, arch ids), "
              "the latency budgets (red dashed).",
    "probs": "How each label's choice probabilities moved over the epochs (stacked bands sum to 1).",
    "latency": "E[T], the derived arch's predicted latency, the budget and λ over the epochs, per shard.",
    "predicted_vs_measured": "The latency table's prediction against the onnxruntime measurement on the "
                             "table's own device (only candidates measured there; crosses = noisy), "
                             "with y = x and a ±5% band.",
}


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (temp file in the same folder, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def render(run: Run, figs: Figures) -> str:
    """The whole report as Markdown."""
    parts = [f"# hwnas report: {run.path.name or run.path}\n", summary(run), pareto_table(run),
             figures(run, figs), cost(run), trend(run)]
    return "\n".join(p for p in parts if p).rstrip() + "\n"


# ---- summary -----------------------------------------------------------------------------------------
def summary(run: Run) -> str:
    """Run settings as a bullet list, plus notes about anything skipped while reading."""
    c = run.config
    kind = ("single search" if run.kind == "search"
            else f"sweep of {len(run.shards)} shard(s), {len(run.finished)} finished")
    space = c.get("space", "?") + (f" {c['space_args']}" if c.get("space_args") else "")
    data = c.get("dataset", "?") + (f" (at most {c['data_limit']} samples per split)" if c.get("data_limit") else "")
    targets = c.get("targets", [c.get("target_ms")])
    rows = [("run folder", f"`{run.path}`"), ("kind", kind), ("space", space), ("dataset", data),
            ("relaxation", c.get("relaxation", "?")),
            ("epochs", f"{c.get('epochs', '?')} ({c.get('warmup_epochs', '?')} warm-up, weights only)"),
            ("hardware loss", c.get("hw_loss") or ("budget" if any(t is not None for t in targets) else "none")),
            ("latency budgets (ms)", ", ".join(f"{t:g}" for t in targets if t is not None) or "none"),
            ("seeds", ", ".join(str(s) for s in c.get("seeds", [c.get("seed", 0)])))]
    if run.kind == "sweep":
        rows.append(("fine-tune per shard", f"{c.get('fine_tune_epochs', '?')} epoch(s)"))
    device = run.device
    if device:
        rows.append(("latency device", f"{device} (onnxruntime, batch 1)"))
    if run.with_latency:
        rows.append(("latency source", _sources(run, device)))
    if run.candidates:
        rows.append(("accuracy", run.candidates[0].get("accuracy_kind") or "validation accuracy"))
        search_kind = next((c["search_accuracy_kind"] for c in run.candidates if c.get("search_accuracy_kind")), None)
        if search_kind or any(c.get("search_accuracy") is not None for c in run.candidates):
            rows.append(("search accuracy", search_kind or "the accuracy the search reported"))
    if (c.get("shards_per_target") or 1) > 1:
        rows.append(("shards per target", f"{c['shards_per_target']} (the space split into sub-spaces)"))
    if isinstance(c.get("ray"), dict):
        rows.append(("ray", _ray(c["ray"])))
    lines = ["## Run\n"] + [f"- **{k}**: {v}" for k, v in rows]
    if run.notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in run.notes]
    return "\n".join(lines) + "\n"


# ---- Pareto table ------------------------------------------------------------------------------------
def pareto_table(run: Run) -> str:
    """One row per front entry (fastest first); the accuracy with its interval and seeds when it has one
    (``hwnas finalize``), and the search's own accuracy in a column of its own when recorded."""
    head = "## Pareto front\n"
    if not run.front:
        why = ("no candidate has a latency (the search ran without a latency table)" if run.candidates
               else "no search has finished yet")
        return f"{head}\nNo front: {why}.\n"
    with_ci = any(interval(c) for c in run.front)
    search = any(c.get("search_accuracy") is not None for c in run.front)
    acc_head = "accuracy (%): mean (interval, seeds)" if with_ci else "accuracy (%)"
    others = other_targets(run.front)  # the front is on the primary target; the others are columns
    rows = [f"| shard | arch id | {acc_head} |" + (" search accuracy (%) |" if search else "")
            + " predicted (ms) | measured (ms) | latency source | budget (ms) |"
            + "".join(f" predicted on {d} (ms) / budget |" for d in others) + " arch |",
            "| --- | --- | ---: |" + (" ---: |" if search else "") + " ---: | ---: | --- | ---: |"
            + " ---: |" * len(others) + " --- |"]
    for c in sorted(run.front, key=lambda c: latency_ms(c) or 0.0):
        meas = c.get("measured_latency_ms") if latency_source(c) == "measured" else None
        rows.append(f"| {c.get('shard', '')} | `{c.get('arch_id', '?')}` | {accuracy_text(c)} | "
                    + (f"{_pct(c.get('search_accuracy'))} | " if search else "")
                    + f"{_num(c.get('predicted_latency_ms'))} | {_num(meas)} | {source_label(c, run.device)} | "
                    f"{_num(c.get('target_latency_ms'))} | " + "".join(f"{_on(c, d)} | " for d in others)
                    + f"`{_arch(c.get('arch') or {})}` |")
    n = len(run.with_latency)
    noisy = sum(is_noisy(c) for c in run.front)
    note = (f" {noisy} front entr{'y' if noisy == 1 else 'ies'} marked noisy: the measurement could not be made "
            "quiet (its trials disagree by the spread shown)." if noisy else "")
    rule = ("no other at least as fast is more accurate beyond both accuracy intervals, i.e. its interval's "
            "low end above this one's high end; overlapping intervals keep both, so the front need not rise "
            "monotonically" if with_ci else "no other is both more accurate and faster")
    kinds = _front_kinds(run)
    return f"{head}\n{kinds}{len(run.front)} of {n} candidate(s) are on the front ({rule}; latency = measured " \
           "on the table's device when it was, else the table's prediction; the latency source column says " \
           f"which).{note}\n\n" + "\n".join(rows) + "\n"


def _on(c: dict[str, Any], device: str) -> str:
    """``predicted / budget`` of candidate ``c`` on the other target ``device`` (``-`` when it has none)."""
    t = target_of(c, device)
    return "-" if t is None else f"{_num(t.get('predicted_latency_ms'))} / {_num(t.get('budget_ms'))}"


def accuracy_text(c: dict[str, Any]) -> str:
    """``98.12 (97.90-98.34, 3 seeds)`` with an interval (percent, 2 decimals), else ``98.1``."""
    iv = interval(c)
    if iv is None or c.get("accuracy") is None:
        n = seeds_of(c)
        return _pct(c.get("accuracy")) + (f" ({n} seed{'s' if n > 1 else ''})" if n else "")
    n = seeds_of(c)
    seeds = f", {n} seeds" if n else ""
    return f"{100 * float(c['accuracy']):.2f} ({100 * iv[0]:.2f}-{100 * iv[1]:.2f}{seeds})"


def _front_kinds(run: Run) -> str:
    """Which accuracy the front shows (``accuracy_kind``, said once) and which the search column shows."""
    kind = next((str(c["accuracy_kind"]) for c in run.front if c.get("accuracy_kind")), None)
    out = f"Accuracy: {kind}.\n" if kind else ""
    if any(c.get("search_accuracy") is not None for c in run.front):
        search = next((str(c["search_accuracy_kind"]) for c in run.front if c.get("search_accuracy_kind")),
                      "the accuracy the search reported before the arch was retrained")
        out += f"Search accuracy: {search}.\n"
    return out + ("\n" if out else "")


# ---- figures -----------------------------------------------------------------------------------------
def figures(run: Run, figs: Figures) -> str:
    """Embedded figures with a caption each; a sentence for each figure that was skipped and why."""
    lines = ["## Figures\n"]
    for name in FIGURE_NAMES:
        if name in figs.paths:
            extra = ""
            if name == "probs" and run.kind == "sweep":
                extra = f" Shard {run.best_shard().key}, the one with the most accurate front entry."
            if name == "pareto" and any(interval(c) for c in run.candidates + run.front):
                extra = (" Vertical bars: each arch's accuracy interval over its seeds (the front keeps an arch "
                         "unless a faster one is better beyond both intervals, so it need not rise).")
            lines += [f"{CAPTIONS[name]}{extra}\n", f"![{name}]({figs.paths[name].name})\n"]
    by_reason: dict[str, list[str]] = {}
    for name, why in figs.skipped.items():
        by_reason.setdefault(why, []).append(f"{name}.png")
    for why, names in by_reason.items():
        verb = "is" if len(names) == 1 else "are"
        lines.append(f"*{_and(names)} {verb} not drawn: {why}.*\n")
    others = [p for k, p in figs.paths.items() if k.startswith("probs-")]
    if others:
        lines.append("Choice probabilities of the other shards: "
                     + ", ".join(f"[{p.stem[len('probs-'):]}]({p.name})" for p in others) + ".\n")
    return "\n".join(lines)


# ---- cost --------------------------------------------------------------------------------------------
@dataclass
class Cost:
    """What one shard cost: wall-clock seconds and device-hours (``seconds * workers * devices / 3600``)."""

    key: str
    seconds: float
    measured_as: str
    workers: int
    cpus: float
    gpus: float
    node: str
    assumed: bool  # resources were not recorded: 1 CPU, 1 worker assumed

    @property
    def unit(self) -> str:
        return "GPU-hours" if self.gpus > 0 else "CPU-hours"

    @property
    def hours(self) -> float:
        return self.seconds * self.workers * (self.gpus if self.gpus > 0 else self.cpus) / 3600


def shard_cost(s: Shard) -> Cost:
    """The shard's cost: ``shard_seconds`` (search + fine-tune) when recorded, else ``search_seconds``,
    else the sum of its epochs so far; resources from ``candidate.json`` or 1 CPU, 1 worker."""
    c: dict[str, Any] = s.candidate or {}
    if c.get("shard_seconds") is not None:
        secs, how = float(c["shard_seconds"]), "whole shard"
    elif (c.get("search_seconds") or s.arch.get("search_seconds")) is not None:
        secs, how = float(c.get("search_seconds") or s.arch["search_seconds"]), "search only"
    else:
        secs, how = sum(float(r.get("seconds", 0.0)) for r in s.history), "epochs so far"
    res = c.get("resources")
    if not isinstance(res, dict):
        return Cost(s.key, secs, how, 1, 1.0, 0.0, "", True)
    return Cost(s.key, secs, how, int(res.get("workers") or 1), float(res.get("cpus") or 0.0),
                float(res.get("gpus") or 0.0), str(res.get("node") or ""), False)


def cost(run: Run) -> str:
    """Cost table per shard with totals per device kind."""
    costs = [shard_cost(s) for s in run.shards]
    rows = ["| shard | wall-clock (s) | measured as | workers | CPUs | GPUs | device-hours | node |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for k in costs:
        rows.append(f"| {k.key} | {k.seconds:.1f} | {k.measured_as} | {k.workers} | {k.cpus:g} | {k.gpus:g} | "
                    f"{k.hours:.4f} {k.unit} | {k.node or '-'} |")
    total = sum(k.seconds for k in costs)
    by_unit = {u: sum(k.hours for k in costs if k.unit == u) for u in ("GPU-hours", "CPU-hours")}
    totals = ", ".join(f"{h:.4f} {u}" for u, h in by_unit.items() if any(k.unit == u for k in costs))
    rows.append(f"| **total** | **{total:.1f}** | | | | | **{totals}** | |")
    text = ["## Cost\n", "Device-hours = wall-clock x workers x (GPUs per worker if any, else CPUs) / 3600.\n",
            "\n".join(rows), ""]
    if run.kind == "sweep" and len(costs) > 1:
        text.append("The total wall-clock is summed over shards: shards that ran in parallel overlap, so the "
                    "sweep took less elapsed time than that.")
    verify = [c for s in run.shards if (c := s.candidate) and c.get("verify_seconds") is not None]
    if verify:
        secs = sum(float(c["verify_seconds"]) for c in verify)
        text.append(f"Verification (each shard fine-tunes its {verify[0].get('verify_k', '?')} most probable archs "
                    f"within the budget and keeps the best on validation) took {secs:.1f} s of that wall-clock.")
    finals = {c["arch_id"]: c for c in run.candidates if c.get("final_seconds") is not None}
    if finals:
        runs = sum(len(c.get("accuracy_runs") or []) for c in finals.values())
        text.append(f"Final training (hwnas finalize): {runs} runs of {len(finals)} archs from scratch took "
                    f"{sum(float(c['final_seconds']) for c in finals.values()):.1f} s (not in the table).")
    assumed = [k.key for k in costs if k.assumed]
    if assumed:
        which = "" if len(assumed) == len(costs) else f" of {_and(assumed)}"
        text.append(f"The run folder does not record the resources (workers, CPUs, GPUs){which}: "
                    "1 CPU and 1 worker are assumed.")
    return "\n".join(text) + "\n"


# ---- search trend ------------------------------------------------------------------------------------
def trend(run: Run) -> str:
    """Computed sentences: per shard how the derived arch moved, the labels decided, the front, the error."""
    lines = ["## Search trend\n"]
    for s in run.shards:
        lines.append(f"- **{s.key}**: " + " ".join(shard_trend(s)))
    for sentence in front_trend(run):
        lines += ["", sentence]
    best = run.best_shard()
    if best is not None and any(r.get("entropy") for r in best.history):
        lines += ["", entropy_table(best, run.kind == "sweep")]
    return "\n".join(lines) + "\n"


def shard_trend(s: Shard) -> list[str]:
    """Sentences on one shard's architecture epochs: accuracy, predicted latency, arch changes, E[T]."""
    ap = [r for r in s.history if r.get("arch_phase")]
    if not ap:
        return [f"no architecture step yet ({len(s.history)} warm-up epoch(s) done)."]
    first, last = ap[0], ap[-1]
    span = f"epochs {first['epoch'] + 1}-{last['epoch'] + 1}" if len(ap) > 1 else f"epoch {first['epoch'] + 1}"
    out = [f"over {len(ap)} architecture epoch(s) ({span}) the derived arch's validation accuracy (supernet "
           f"weights) went {_pct(first.get('derived_val_accuracy'))}% → {_pct(last.get('derived_val_accuracy'))}%"]
    if last.get("predicted_latency_ms") is not None:
        out[0] += (f" and its predicted latency {_num(first.get('predicted_latency_ms'))} → "
                   f"{_num(last['predicted_latency_ms'])} ms")
    out[0] += "."
    changes = [r["epoch"] + 1 for prev, r in zip(ap, ap[1:], strict=False) if r.get("arch") != prev.get("arch")]
    out.append(f"The derived arch changed {len(changes)} time(s), last at epoch {changes[-1]}." if changes
               else "The derived arch did not change.")
    out.append(_budget_sentence(s, last))
    return [t for t in out if t]


def _budget_sentence(s: Shard, last: dict[str, Any]) -> str:
    et = last.get("expected_latency_ms_end")
    if et is None:
        return "No latency table, so no E[T]."
    lam = f" (λ = {last['lambda_end']:.3g})" if last.get("lambda_end") is not None else ""
    if s.target_ms is None:
        return f"E[T] ended at {_num(et)} ms{lam}; no budget was set."
    rel = et / s.target_ms - 1
    where = "under" if rel <= 0 else "over"
    out = f"E[T] ended at {_num(et)} ms, {where} the {_num(s.target_ms)} ms budget by {abs(rel):.1%}{lam}"
    pred = last.get("predicted_latency_ms")
    if rel > 0 and pred is not None:
        fits = "within the budget" if pred <= s.target_ms else "also over it"
        out += f"; the derived arch is predicted at {_num(pred)} ms, {fits}"
    return out + "."


def front_trend(run: Run) -> list[str]:
    """The front's accuracy/latency span and the latency model's prediction error."""
    out = []
    front = sorted(run.front, key=lambda c: latency_ms(c) or 0.0)
    if len(front) > 1:
        a, b = front[0], front[-1]
        verb = "rises" if b["accuracy"] >= a["accuracy"] else "goes"
        out.append(f"Across the front, accuracy {verb} from {_pct(a['accuracy'])}% at {_num(latency_ms(a))} ms "
                   f"(`{a['arch_id']}`) to {_pct(b['accuracy'])}% at {_num(latency_ms(b))} ms (`{b['arch_id']}`).")
    errs = prediction_errors(run.candidates, run.device)
    if errs:
        inside = sum(e <= 0.05 for e in errs)
        out.append(f"Latency prediction error (|predicted - measured| / measured): median {statistics.median(errs):.1%}, "
                   f"max {max(errs):.1%}; {inside} of {len(errs)} candidate(s) within ±5%.")
    elif run.candidates:
        out.append("No candidate was both predicted and measured on the table's device, so there is no "
                   "prediction error.")
    return out


def entropy_table(s: Shard, best: bool) -> str:
    """Entropy (nats) of each label at the first and last epoch, and whether the label is decided."""
    hist = [r for r in s.history if r.get("entropy")]
    first, last = hist[0], hist[-1]
    rows = [f"Entropy per label for shard {s.key}" + (" (the most accurate front entry)" if best else "")
            + f"; a label is decided when its most probable value holds ≥ {DECIDED:.0%}:\n",
            "| label | entropy start (nats) | entropy end (nats) | most probable value (p) | decided |",
            "| --- | ---: | ---: | --- | --- |"]
    decided = []
    for label, h1 in last["entropy"].items():
        probs = (last.get("probs") or {}).get(label, {})
        top = max(probs.items(), key=lambda kv: kv[1]) if probs else ("?", 0.0)
        is_decided = top[1] >= DECIDED
        decided += [label] if is_decided else []
        rows.append(f"| {label} | {first['entropy'].get(label, float('nan')):.3f} | {h1:.3f} | "
                    f"{top[0]} ({top[1]:.2f}) | {'yes' if is_decided else 'no'} |")
    rows.append(f"\n{len(decided)} of {len(last['entropy'])} label(s) decided"
                + (f": {', '.join(decided)}." if decided else "."))
    return "\n".join(rows)


# ---- formatting --------------------------------------------------------------------------------------
def _num(v: Any) -> str:
    return "-" if v is None else f"{float(v):.4f}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}"


def _sources(run: Run, device: str | None) -> str:
    """Where the run's latencies come from, in words (counts of measured / predicted / noisy candidates)."""
    cands = run.with_latency
    meas = [c for c in cands if latency_source(c) == "measured"]
    pred = len(cands) - len(meas)
    on = f" on {device}" if device else ""
    parts = []
    if meas:
        noisy = sum(is_noisy(c) for c in meas)
        parts.append(f"{len(meas)} measured{on} (onnxruntime)" + (f", {noisy} of them noisy" if noisy else ""))
    if pred:
        why = (f" (not measured: this host is not {device})"
               if device and any(c.get("latency_source") == "predicted" for c in cands) else "")
        parts.append(f"{pred} predicted{on} by the latency table{why}")
    return "; ".join(parts)


def _ray(ray: dict[str, Any]) -> str:
    if not ray.get("enabled", True):
        return "not used (shards ran one after another in one process)"
    keys = ("address", "workers_per_shard", "cpus_per_shard", "gpus_per_shard", "max_restarts")
    return ", ".join(f"{k}={ray[k]}" for k in keys if ray.get(k) is not None)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _arch(arch: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in arch.items())
