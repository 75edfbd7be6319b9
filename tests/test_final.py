"""Derive, then verify (a shard's result is the best of its k most probable archs within the budget), and
final training (``hwnas finalize``): every candidate retrained from scratch with several seeds, resumable,
the front ranked on the mean test accuracy with its interval."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from hwnas.config import ConfigError, FinalConfig, SearchConfig, SweepConfig, split_run_dict
from hwnas.errors import HwnasError
from hwnas.run import load_settings, read_jsonl
from hwnas.search.finalize import finalize
from hwnas.search.sweep import ShardSpec, run_shard, run_sweep

# (``import hwnas.search.x as m`` fails: the package ``hwnas`` exports a function named ``search``)
finalize_mod = importlib.import_module("hwnas.search.finalize")
verify_mod = importlib.import_module("hwnas.search.verify")

SMALL = dict(space="seed-cnn", dataset="digits", data_limit=200, epochs=3, warmup_epochs=1, fine_tune_epochs=1,
             threads=1)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory) -> Path:
    """A finished 2-budget sweep (no Ray), k = 3."""
    run = tmp_path_factory.mktemp("sweep") / "run"
    run_sweep(SearchConfig(**SMALL, verify_k=3), SweepConfig(targets=[0.05, 0.1], seeds=[0]), run, progress=False)
    return run


# ---- verification --------------------------------------------------------------------------------------
def test_a_shard_fine_tunes_its_k_most_probable_archs_and_keeps_the_best_on_validation(sweep_run):
    for c in read_jsonl(sweep_run / "candidates.jsonl"):
        ver = c["verified"]
        assert c["verify_k"] == len(ver) == 3
        assert len({v["arch_id"] for v in ver}) == 3, "distinct archs"
        assert [v["rank"] for v in ver] == [0, 1, 2]
        assert all(v["predicted_latency_ms"] <= c["target_latency_ms"] for v in ver)
        best = max(ver, key=lambda v: (v["val_accuracy"], -v["rank"]))
        assert (c["arch_id"], c["accuracy"], c["derived_rank"]) == (best["arch_id"], best["val_accuracy"], best["rank"])
        assert c["predicted_latency_ms"] == best["predicted_latency_ms"]
        assert "best of the 3 most probable archs" in c["accuracy_kind"]
        assert c["verify_seconds"] > 0
        shard = sweep_run / "shards" / c["shard"]
        assert sorted(p.stem for p in (shard / "verify").glob("*.json")) == sorted(v["arch_id"] for v in ver)


def test_verification_resumes_from_its_records(sweep_run, tmp_path, monkeypatch):
    """A shard killed while verifying: the archs already scored are read back, the rest fine-tuned."""
    import shutil

    key = read_jsonl(sweep_run / "candidates.jsonl")[0]["shard"]
    shard = tmp_path / key
    shutil.copytree(sweep_run / "shards" / key, shard)
    (shard / "candidate.json").unlink()
    records = sorted((shard / "verify").glob("*.json"))
    records[0].unlink()
    calls = []
    real = verify_mod.train_arch
    monkeypatch.setattr(verify_mod, "train_arch", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    cfg = load_settings(shard)[0]  # the shard's own resolved config
    cand = run_shard(ShardSpec(key, cfg), shard)
    assert len(calls) == 1, "only the arch whose record was lost is fine-tuned again"
    before = read_jsonl(sweep_run / "candidates.jsonl")[0]
    assert (cand["arch_id"], cand["accuracy"]) == (before["arch_id"], before["accuracy"])


def test_k_1_scores_the_most_probable_arch_only(tmp_path):
    cfg = SearchConfig(**SMALL, verify_k=1, target_ms=0.1)
    cand = run_shard(ShardSpec("t0.1-s0", cfg), tmp_path / "s")
    assert cand["verify_k"] == 1 and cand["derived_rank"] == 0
    assert json.loads((tmp_path / "s" / "arch.json").read_text())["arch_id"] == cand["arch_id"]
    assert "best of" not in cand["accuracy_kind"]


# ---- final training ------------------------------------------------------------------------------------
def test_finalize_retrains_every_candidate_with_each_seed_and_ranks_on_the_mean(sweep_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sweep_run, run)
    before = {c["shard"]: c for c in read_jsonl(run / "candidates.jsonl")}
    final = FinalConfig(epochs=1, seeds=[0, 1])
    front = finalize(run, final, progress=False)
    cands = read_jsonl(run / "candidates.jsonl")
    archs = {c["arch_id"] for c in cands}
    assert sorted(p.stem for p in (run / "final").glob("*.json")) == sorted(f"{a}-s{s}" for a in archs for s in (0, 1))
    for c in cands:
        runs = [json.loads((run / "final" / f"{c['arch_id']}-s{s}.json").read_text())["test_accuracy"] for s in (0, 1)]
        assert c["accuracy_runs"] == runs and c["accuracy"] == pytest.approx(sum(runs) / 2)
        lo, hi = c["accuracy_ci"]
        assert lo <= c["accuracy"] <= hi
        assert c["search_accuracy"] == before[c["shard"]]["accuracy"]
        assert c["accuracy_kind"].startswith("test accuracy, mean of 2 seeds trained from scratch for 1 epochs")
        assert json.loads((run / "shards" / c["shard"] / "candidate.json").read_text()) == c
    assert json.loads((run / "pareto.json").read_text()) == front
    from hwnas.report import write_report

    md = write_report(run).read_text()
    assert "Final training (hwnas finalize): " in md and "2 seeds)" in md and "Verification" in md
    # a second finalize with the same settings trains nothing and keeps the search's own number
    monkeypatch.setattr(finalize_mod, "train_arch", lambda *a, **k: pytest.fail("trained again"))
    again = finalize(run, final, progress=False)
    assert again == front
    assert all(c["search_accuracy"] == before[c["shard"]]["accuracy"] for c in read_jsonl(run / "candidates.jsonl"))


def test_finalize_killed_mid_run_resumes_with_the_runs_not_yet_written(sweep_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sweep_run, run)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "hwnas.cli", "finalize", str(run), "--epochs", "2", "--seeds", "0,1", "--no-ray",
            "--no-report", "--no-progress"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 300
        while not list((run / "final").glob("*.json")) and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in (run / "final").glob("*.json")}
    assert first, "killed before any run finished"
    n_units = 2 * len({c["arch_id"] for c in read_jsonl(run / "candidates.jsonl")})
    assert len(first) < n_units, "the process was killed after every run had finished; the test proves nothing"
    out = run_cli("finalize", str(run), "--epochs", "2", "--seeds", "0,1", "--no-ray", "--no-report")
    assert out.returncode == 0, out.stderr
    assert f"{len(first)} already done" in out.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (run / "final").glob("*.json")}
    assert len(after) == n_units and all(after[k] == v for k, v in first.items()), "finished runs were redone"
    assert "(95% t-interval" in json.loads((run / "pareto.json").read_text())[0]["accuracy_kind"]


def test_finalize_refuses_a_single_search_and_a_sweep_without_candidates(tmp_path):
    out = run_cli("search", "--space", "seed-cnn", "--dataset", "digits", "--data-limit", "100", "--epochs", "2",
                  "--warmup-epochs", "1", "--out", str(tmp_path / "one"), "--no-progress")
    assert out.returncode == 0, out.stderr
    out = run_cli("finalize", str(tmp_path / "one"), "--no-ray")
    assert out.returncode == 2 and "single search, not a sweep" in out.stderr and "hwnas train" in out.stderr
    with pytest.raises(HwnasError, match="not a sweep"):
        finalize(tmp_path / "one", FinalConfig(epochs=1, seeds=[0]), progress=False)


def test_a_final_block_is_validated_and_a_sweep_with_it_ends_finalized(tmp_path):
    with pytest.raises(ConfigError, match="final must be a mapping of epochs, seeds, lr"):
        split_run_dict({"final": {"epoch": 3}}, "x.yaml")
    with pytest.raises(ConfigError, match="distinct"):
        split_run_dict({"final": {"seeds": [0, 0]}}, "x.yaml")
    cfg, sweep, _ = split_run_dict({**SMALL, "verify_k": 2, "targets": [0.1], "final": {"epochs": 1, "seeds": [0, 1]}},
                                   "x.yaml")
    from hwnas.config import RayConfig
    from hwnas.distributed import run_shards

    res = run_shards(cfg, sweep, RayConfig(enabled=False), tmp_path / "run", progress=False)
    assert res.pareto and all(c["accuracy_ci"] and len(c["accuracy_runs"]) == 2 for c in res.candidates)
    assert "final:" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.ray
def test_final_training_as_ray_tasks_equals_the_in_process_numbers(sweep_run, tmp_path):
    import shutil

    ray = pytest.importorskip("ray")
    from hwnas.config import RayConfig
    from hwnas.distributed.final import ray_runner

    final = FinalConfig(epochs=1, seeds=[0, 1])
    here, there = tmp_path / "here", tmp_path / "there"
    shutil.copytree(sweep_run, here)
    shutil.copytree(sweep_run, there)
    local = finalize(here, final, progress=False)
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
        on_ray = finalize(there, final, progress=False, runner=ray_runner(RayConfig(num_cpus=2), progress=False))
    finally:
        ray.shutdown()
    keys = ("arch_id", "accuracy", "accuracy_ci", "accuracy_runs")
    assert [{k: c[k] for k in keys} for c in on_ray] == [{k: c[k] for k in keys} for c in local]
    assert sorted(p.name for p in (there / "final").glob("*.json")) == sorted(p.name for p in (here / "final").glob("*.json"))
