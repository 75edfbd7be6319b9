"""Measurement and ``hwnas profile`` with real onnxruntime sessions (tiny run counts; no timing asserted)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest_latency import ROOT, TINY, TINY_FLAGS

from hwnas.latency import LatencyModel, TableError, load_table, measure_module, measure_modules, profile_space
from hwnas.latency import profile as profile_mod
from hwnas.latency.protocol import Protocol, ProtocolError
from hwnas.space import get_space


@pytest.fixture(scope="module")
def small_space():
    return get_space("mbconv", depths=(1, 1, 1))  # 30 unit entries


def test_measure_module_and_batch_return_positive_ms():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    ms = measure_module(conv, (3, 16, 16), TINY)
    assert isinstance(ms, float) and ms > 0
    results = measure_modules([(conv, (3, 16, 16)), (torch.nn.Identity(), (3, 16, 16))], TINY)
    assert len(results) == 2 and all(r.median_ms > 0 and len(r.trial_ms) == TINY.trials for r in results)


def test_noisy_models_are_remeasured_and_min_aggregate_pools_trials():
    conv = torch.nn.Conv2d(3, 4, 3)
    strict = dataclasses.replace(TINY, max_spread=1e-12, max_remeasure=2, aggregate="min")
    r = measure_modules([(conv, (3, 8, 8))], strict)[0]
    assert r.remeasured == 2 and len(r.trial_ms) == 3 * TINY.trials and r.median_ms == min(r.trial_ms)


@pytest.mark.parametrize("bad", [{"runs": 0}, {"trials": 0}, {"opt_level": "max"}, {"aggregate": "mean"},
                                 {"max_spread": 0}])
def test_protocol_rejects_bad_settings(bad):
    with pytest.raises(ProtocolError):
        Protocol(**bad)


def test_profile_resumes_and_never_remeasures_finished_units(tmp_path, small_space, monkeypatch):
    out = tmp_path / "t.json"
    first = profile_space(small_space, out, "test-1t", TINY, batch=4, limit=10, progress=False)
    assert len(first.entries) == 10 and first.overhead_ms > 0
    saved = load_table(out, small_space, complete=False).entries
    assert saved == first.entries

    measured: list[str] = []
    real = profile_mod.measure_batch

    def spy(models, protocol, core):
        assert os.sched_getaffinity(0) == {core}, "units are timed on the one pinned core"
        measured.extend(m.name for m in models)
        return real(models, protocol, core)

    monkeypatch.setattr(profile_mod, "measure_batch", spy)
    allowed = os.sched_getaffinity(0)
    table = profile_space(small_space, out, "test-1t", TINY, batch=4, progress=False)
    assert not set(measured) & set(saved), "finished units were measured again"
    assert len(measured) == 30 - 10 and "identity" not in measured
    assert os.sched_getaffinity(0) == allowed, "the affinity is restored afterwards"
    assert all(table.entries[k] == e for k, e in saved.items())
    model = LatencyModel.load(out, small_space)
    assert model.predict(small_space.sample(__import__("random").Random(0))) > 0


def test_profile_refuses_other_protocol_or_corrupted_file(tmp_path, small_space):
    out = tmp_path / "t.json"
    profile_space(small_space, out, "test-1t", TINY, limit=2, progress=False)
    before = out.read_bytes()
    with pytest.raises(TableError, match="protocol"):
        profile_space(small_space, out, "test-1t", dataclasses.replace(TINY, runs=7), progress=False)
    with pytest.raises(TableError, match="device 'test-1t', not 'other-1t'"):
        profile_space(small_space, out, "other-1t", TINY, progress=False)
    with pytest.raises(TableError, match="not of 'mbconv'"):
        profile_space(get_space("mbconv"), out, "test-1t", TINY, progress=False)
    assert out.read_bytes() == before
    out.write_text(before.decode()[:100])
    with pytest.raises(TableError, match="corrupted or truncated"):
        profile_space(small_space, out, "test-1t", TINY, progress=False)
    assert out.read_text() == before.decode()[:100]


def _entries(path):
    try:
        return json.loads(path.read_text())["entries"]
    except (OSError, ValueError, KeyError):
        return {}


def test_profile_killed_mid_run_resumes_from_the_saved_batches(tmp_path):
    out = tmp_path / "mb.json"
    cmd = [sys.executable, "-m", "hwnas.cli", "profile", "--space", "mbconv", "--device", "test-1t", "--out",
           str(out), "--batch", "4", "--no-progress", *TINY_FLAGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_entries(out)) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _entries(out)
    assert len(before) >= 8
    load_table(out, complete=False)  # the file on disk is always a whole table
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = load_table(out)
    assert {k: after.entries[k].median_ms for k in before} == {k: v["median_ms"] for k, v in before.items()}
    assert not after.missing(get_space("mbconv"))
    assert "complete" in done.stdout
