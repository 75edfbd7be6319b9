"""``hwnas report``: report.md and PNGs from real run folders (one search, a sweep, one without latency)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from conftest import run_cli
from matplotlib.container import ErrorbarContainer

from hwnas.config import SearchConfig, SweepConfig
from hwnas.errors import HwnasError
from hwnas.report import load_run, plots, write_report
from hwnas.run import write_front
from hwnas.search.loop import run_search
from hwnas.search.stats import mean_ci
from hwnas.search.sweep import run_sweep

FAST = dict(space="seed-cnn", dataset="digits", data_limit=200, epochs=3, warmup_epochs=1, fine_tune_epochs=1,
            threads=1)
LATENCY_PNGS = ("pareto.png", "latency.png", "predicted_vs_measured.png")


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "search"
    run_search(SearchConfig(**FAST, target_ms=0.1), out, progress=False)
    return out


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "plain"
    run_search(SearchConfig(**FAST), out, progress=False)
    return out


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "sweep"
    run_sweep(SearchConfig(**FAST), SweepConfig(targets=[0.08, 0.2], seeds=[0]), out, progress=False)
    return out


def _copy(run: Path, dst: Path) -> Path:
    """A copy of a run folder without its checkpoints (cheap to edit)."""
    return Path(shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoint.*", "report")))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width >= 400 and height >= 300 and len(data) > 10_000, f"{path} looks empty ({width}x{height})"


def _sections(text: str) -> None:
    for head in ("## Run", "## Pareto front", "## Figures", "## Cost", "## Search trend"):
        assert head in text
    assert "**total**" in text and "CPU-hours" in text
    assert "architecture epoch(s)" in text and "entropy" in text.lower()


def test_single_search_report(search_run):
    path = write_report(search_run)
    assert path == search_run / "report" / "report.md"
    text = path.read_text()
    _sections(text)
    arch = json.loads((search_run / "arch.json").read_text())
    assert f"`{arch['arch_id']}`" in text
    assert "0.1 ms budget" in text or "0.1000 ms budget" in text
    assert "prediction error" in text
    for name in ("probs.png", *LATENCY_PNGS):
        assert_png(path.parent / name)
        assert f"]({name})" in text


def test_sweep_report_through_cli(sweep_run, tmp_path):
    out = tmp_path / "rep"
    proc = run_cli("report", str(sweep_run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert str(out / "report.md") in proc.stdout and "pareto.png" in proc.stdout
    text = (out / "report.md").read_text()
    _sections(text)
    front = json.loads((sweep_run / "pareto.json").read_text())
    table = text.split("## Pareto front")[1].split("## Figures")[0]
    for c in front:
        assert any(f"| {c['shard']} | `{c['arch_id']}` |" in row for row in table.splitlines())
    for key in ("t0.08-s0", "t0.2-s0"):
        assert f"| {key} |" in text.split("## Cost")[1]
    for name in ("probs.png", *LATENCY_PNGS):
        assert_png(out / name)
    best = max(front, key=lambda c: c["accuracy"])["shard"]
    others = [k for k in ("t0.08-s0", "t0.2-s0") if k != best]
    for key in others:
        assert_png(out / f"probs-{key}.png")
    assert "Across the front" in text or len(front) == 1


def test_report_without_latency_skips_latency_figures(plain_run, tmp_path):
    out = tmp_path / "rep"
    text = write_report(plain_run, out).read_text()
    _sections(text)
    assert_png(out / "probs.png")
    assert not any((out / n).exists() for n in LATENCY_PNGS)
    assert "not drawn: the search ran without a latency table" in text
    assert "No latency table, so no E[T]" in text


def test_stale_figures_are_removed(search_run, plain_run, tmp_path):
    out = tmp_path / "rep"
    write_report(search_run, out)
    assert (out / "pareto.png").exists()
    write_report(plain_run, out)
    assert not (out / "pareto.png").exists() and (out / "probs.png").exists()


def _edit_candidate(path: Path, **changes) -> None:
    cand = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in cand.items() if v is not None}))


def test_cost_uses_recorded_resources(sweep_run, tmp_path):
    run = _copy(sweep_run, tmp_path / "sweep")
    _edit_candidate(run / "shards" / "t0.2-s0" / "candidate.json", shard_seconds=7200.0,
                    resources={"cpus": 4.0, "gpus": 1.0, "workers": 2, "node": "node-a", "gpu_ids": [0]})
    _edit_candidate(run / "shards" / "t0.08-s0" / "candidate.json", shard_seconds=None, resources=None)
    text = write_report(run).read_text()
    cost = text.split("## Cost")[1].split("## Search trend")[0]
    row = next(r for r in cost.splitlines() if r.startswith("| t0.2-s0 |"))
    assert "7200.0" in row and "whole shard" in row and "4.0000 GPU-hours" in row and "node-a" in row
    assert "GPU-hours" in cost.split("**total**")[1] and "CPU-hours" in cost.split("**total**")[1]
    row = next(r for r in cost.splitlines() if r.startswith("| t0.08-s0 |"))
    assert "search only" in row and "CPU-hours" in row  # no shard_seconds, no resources: 1 CPU assumed
    assert "resources (workers, CPUs, GPUs) of t0.08-s0" in cost


def test_unfinished_sweep_still_reports(sweep_run, tmp_path):
    run = _copy(sweep_run, tmp_path / "sweep")
    for name in ("candidate.json", "arch.json"):
        (run / "shards" / "t0.2-s0" / name).unlink()
    kept = [c for c in json.loads((run / "pareto.json").read_text()) if c["shard"] != "t0.2-s0"]
    (run / "pareto.json").write_text(json.dumps(kept))
    (run / "candidates.jsonl").write_text("".join(json.dumps(c) + "\n" for c in kept))
    loaded = load_run(run)
    assert [s.key for s in loaded.finished] == ["t0.08-s0"]
    text = write_report(run).read_text()
    assert "have not finished: t0.2-s0" in text and "| t0.2-s0 |" in text.split("## Cost")[1]


def test_not_a_run_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(HwnasError, match="not a run folder"):
        load_run(tmp_path)
    proc = run_cli("report", str(tmp_path))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("hwnas: error:") and "history.jsonl" in err and "hwnas search" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    with pytest.raises(HwnasError, match="does not exist"):
        write_report(tmp_path / "nope")


# ---- a finalized run: accuracy = mean of seeds with a 95% interval --------------------------------------

FINAL_KIND = "test accuracy, mean of 3 seeds trained from scratch for 10 epochs (95% t-interval)"


def _final(i: int, runs: list[float], ms: float, search: float) -> dict:
    mean, lo, hi = mean_ci(runs)
    return {"arch": {"c": i}, "arch_id": f"a{i}", "shard": f"t{ms:g}-s0", "accuracy": mean,
            "accuracy_kind": FINAL_KIND, "accuracy_ci": [lo, hi], "accuracy_runs": runs,
            "search_accuracy": search, "search_accuracy_kind": "validation accuracy with the supernet's weights",
            "predicted_latency_ms": ms * 1.02, "measured_latency_ms": ms, "target_latency_ms": ms}


@pytest.fixture
def finalized_run(tmp_path) -> Path:
    """A hand-made sweep folder (config, candidates.jsonl, pareto.json) as ``hwnas finalize`` leaves it:
    a2 is slower and less accurate than a1 but within its interval, a3 is beaten beyond the intervals."""
    run = tmp_path / "final"
    run.mkdir()
    (run / "config.yaml").write_text("space: seed-cnn\ndataset: digits\ntargets: [0.02, 0.03, 0.05]\nseeds: [0]\n")
    cands = [_final(1, [0.965, 0.97, 0.975], 0.02, 0.91), _final(2, [0.95, 0.96, 0.97], 0.03, 0.93),
             _final(3, [0.90, 0.905, 0.91], 0.05, 0.94)]
    front = write_front(run, cands)
    assert [c["arch_id"] for c in front] == ["a1", "a2"]
    return run


def test_finalized_run_draws_error_bars_and_shows_intervals(finalized_run, monkeypatch):
    axes = {}
    save = plots.save

    def spy(fig, path):
        axes[path.stem] = fig.axes[0]
        return save(fig, path)

    monkeypatch.setattr(plots, "save", spy)
    text = write_report(finalized_run).read_text()
    ax = axes["pareto"]
    bars = [b for b in ax.containers if isinstance(b, ErrorbarContainer)]
    segments = sorted((float(s[0][0]), float(s[0][1]), float(s[1][1]))
                      for b in bars for col in b.lines[2] for s in col.get_segments())
    cands = sorted(load_run(finalized_run).candidates, key=lambda c: c["measured_latency_ms"])
    assert len(segments) == 3  # the front's two and the dominated one's
    for (x, lo, hi), c in zip(segments, cands, strict=True):
        assert x == pytest.approx(c["measured_latency_ms"])
        assert (lo, hi) == pytest.approx((100 * c["accuracy_ci"][0], 100 * c["accuracy_ci"][1]))
    assert "test accuracy" in ax.get_ylabel() and "3 seeds" in ax.get_ylabel() and "95% interval" in ax.get_ylabel()
    assert_png(finalized_run / "report" / "pareto.png")

    table = text.split("## Pareto front")[1].split("## Figures")[0]
    assert f"Accuracy: {FINAL_KIND}." in table and "Search accuracy: validation accuracy" in table
    assert "beyond both accuracy intervals" in table and "| search accuracy (%) |" in table
    row = next(r for r in table.splitlines() if r.startswith("| t0.02-s0 |"))
    assert "| 97.00 (95.76-98.24, 3 seeds) | 91.0 |" in row  # 0.97 +- 4.3027 * 0.005 / sqrt(3)
    assert not any(r.startswith("| t0.05-s0 |") for r in table.splitlines())
    assert "Vertical bars" in text.split("## Figures")[1]


def test_report_without_intervals_draws_no_error_bars(finalized_run, monkeypatch):
    cands = [{k: v for k, v in c.items() if k not in ("accuracy_ci", "accuracy_runs", "search_accuracy")}
             for c in load_run(finalized_run).candidates]
    write_front(finalized_run, cands)
    axes = {}
    save = plots.save
    monkeypatch.setattr(plots, "save", lambda fig, path: (axes.setdefault(path.stem, fig.axes[0]), save(fig, path))[1])
    text = write_report(finalized_run).read_text()
    assert not [b for b in axes["pareto"].containers if isinstance(b, ErrorbarContainer)]
    assert axes["pareto"].get_ylabel() == "test accuracy (%)"
    assert "search accuracy (%)" not in text and "| 97.0 |" in text
