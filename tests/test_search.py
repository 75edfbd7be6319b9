"""The one-process search: run folder contents, learned dropout, and real search + retrain accuracy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import ROOT, run_cli

from hwnas.config import SearchConfig
from hwnas.search import run_search
from hwnas.space import get_space


def test_run_folder_contents(tmp_path):
    cfg = SearchConfig(relaxation="single-path", epochs=3, warmup_epochs=1, data_limit=200, threads=1)
    result = run_search(cfg, tmp_path, progress=False)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == cfg.to_dict()
    lines = [json.loads(s) for s in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    assert not lines[0]["arch_phase"] and lines[2]["arch_phase"]
    space = get_space("seed-cnn")
    for rec in lines:
        assert set(rec["entropy"]) == set(space.labels)
        space.validate(rec["arch"])
        assert 0 <= rec["train_accuracy"] <= 1 and rec["train_loss"] > 0
    assert "val_loss" in lines[2] and "val_accuracy" in lines[2]
    arch_file = json.loads((tmp_path / "arch.json").read_text())
    assert space.from_json(arch_file)[0] == result.arch
    assert arch_file["arch_id"] == result.arch_id
    assert (tmp_path / "checkpoint.safetensors").is_file() and not (tmp_path / "checkpoint.pt").exists()


def test_rerun_of_a_finished_run_resumes_instead_of_recomputing(tmp_path):
    cfg = SearchConfig(relaxation="gumbel", epochs=2, warmup_epochs=1, data_limit=100, threads=1)
    first = run_search(cfg, tmp_path, progress=False)
    with open(tmp_path / "history.jsonl", "a") as f:  # an epoch that died after logging, before its checkpoint
        f.write('{"epoch": 2, "partial": true}\n')
    again = run_search(cfg, tmp_path, progress=False)
    assert again.history == first.history and again.arch == first.arch
    lines = [json.loads(s) for s in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1] and lines == first.history


def _history_without_timing(run):
    rows = [json.loads(s) for s in (run / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
def test_search_killed_mid_run_resumes_to_the_same_result(tmp_path):
    """SIGKILL after the first epoch's checkpoint, rerun: the same history and arch as an uninterrupted run."""
    args = ["search", "--relaxation", "gumbel", "--epochs", "4", "--warmup-epochs", "1", "--data-limit", "300",
            "--threads", "1", "--no-progress"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli(*args, "--out", str(whole)).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "hwnas.cli", *args, "--out", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "history.jsonl").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "arch.json").exists(), "the run finished before it could be killed"
    r = run_cli(*args, "--out", str(killed))
    assert r.returncode == 0, r.stderr
    assert _history_without_timing(killed) == _history_without_timing(whole)
    a, b = json.loads((killed / "arch.json").read_text()), json.loads((whole / "arch.json").read_text())
    assert a["arch"] == b["arch"] and a["supernet_val_accuracy"] == b["supernet_val_accuracy"]


def test_resuming_with_other_settings_is_refused(tmp_path):
    from hwnas.errors import ConfigError

    cfg = SearchConfig(relaxation="single-path", epochs=2, warmup_epochs=1, data_limit=100, threads=1)
    run_search(cfg, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="epochs: 2 -> 3"):
        run_search(cfg.replace(epochs=3), tmp_path, progress=False)
    run_search(cfg.replace(threads=2), tmp_path, progress=False)  # run-time settings may change


def test_learned_dropout_moves_and_reaches_the_arch_file(tmp_path):
    cfg = SearchConfig(relaxation="gumbel", epochs=4, warmup_epochs=1, data_limit=300, learn_dropout=True, threads=1)
    result = run_search(cfg, tmp_path, progress=False)
    rate = result.hparams["dropout"]
    assert 0.0 <= rate <= 0.5 and rate != pytest.approx(0.1, abs=1e-4)  # moved from its initial value
    rates = [h["hparams"]["dropout"] for h in result.history]
    assert rates[0] == pytest.approx(0.1, abs=1e-4)  # warm-up epoch: not trained yet
    arch, hparams = get_space("seed-cnn").from_json(json.loads((tmp_path / "arch.json").read_text()))
    assert hparams == {"dropout": rate}
    model = get_space("seed-cnn").build(arch, hparams)
    assert model.drop.p == pytest.approx(rate)


def test_dropout_off_by_default(tmp_path):
    result = run_search(SearchConfig(epochs=2, warmup_epochs=1, data_limit=100, threads=1), None, progress=False)
    assert result.hparams == {}


def _search_then_train(tmp_path, relaxation, *extra):
    run = tmp_path / relaxation
    r = run_cli("search", "--relaxation", relaxation, "--epochs", "4", "--warmup-epochs", "1", "--out", str(run),
                "--no-progress", *extra)
    assert r.returncode == 0, r.stderr
    r = run_cli("train", str(run / "arch.json"), "--epochs", "8", "--json", "--no-progress", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("relaxation", ["softmax", "gumbel", "single-path"])
def test_search_then_train_reaches_95_percent_on_digits(tmp_path, relaxation):
    out = _search_then_train(tmp_path, relaxation, "--threads", "2")
    assert out["test_accuracy"] >= 0.95, out


@pytest.mark.slow
@pytest.mark.parametrize("relaxation", ["softmax", "gumbel", "single-path"])
def test_search_then_train_reaches_95_percent_on_mnist(tmp_path, relaxation, mnist_root):
    # the search sees 1,500 samples per split to stay quick; the retrain uses the whole 6,000-image split
    run = tmp_path / relaxation
    r = run_cli("search", "--relaxation", relaxation, "--epochs", "3", "--warmup-epochs", "1", "--dataset", "mnist",
                "--data-root", str(mnist_root), "--data-limit", "1500", "--batch-size", "128", "--out", str(run),
                "--no-progress", "--threads", "2")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", str(run / "arch.json"), "--dataset", "mnist", "--data-root", str(mnist_root),
                "--epochs", "6", "--json", "--no-progress", "--threads", "2")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["test_accuracy"] >= 0.95, out


@pytest.mark.slow
def test_train_inherit_starts_from_the_supernet_weights(tmp_path):
    from hwnas.data import load_dataset, make_loader
    from hwnas.search._runtime import evaluate
    from hwnas.search.retrain import inherit_weights

    run = tmp_path / "run"
    assert run_cli("search", "--relaxation", "single-path", "--epochs", "3", "--warmup-epochs", "1",
                   "--out", str(run), "--no-progress").returncode == 0
    space = get_space("seed-cnn")
    arch, hparams = space.from_json(json.loads((run / "arch.json").read_text()))
    model = inherit_weights(space, arch, hparams, run).eval()
    _, acc = evaluate(model, make_loader(load_dataset("digits").val, 256, shuffle=False), torch.device("cpu"))
    history = [json.loads(s) for s in (run / "history.jsonl").read_text().splitlines()]
    assert acc == pytest.approx(history[-1]["derived_val_accuracy"])  # the same function as in the search
    r = run_cli("train", str(run / "arch.json"), "--inherit", str(run), "--epochs", "6", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["inherited_from"] == str(run) and out["test_accuracy"] >= 0.93
