"""Issue 12: config numbers and types, hyperparameters that live in the config, latency tables, non-finite
losses and arch files are checked, and every bad input ends in one line naming the key, the value, what is
allowed and the fix (exit 2), never a traceback or a run that silently goes on with NaN."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest_latency import TINY_FLAGS, synthetic_table

from hwnas.cli import main
from hwnas.config import FieldError, RayConfig, SearchConfig, SweepConfig, TrainConfig, from_dict
from hwnas.errors import HwnasError
from hwnas.latency import calibrate
from hwnas.latency.model import LatencyModel
from hwnas.latency.table import read_table, save_table
from hwnas.search import loop, sweep
from hwnas.search.loop import SearchResult, SearchState, arch_step, weight_step
from hwnas.space import ArchError, get_space

SMALL = ["--epochs", "2", "--warmup-epochs", "1", "--data-limit", "100", "--threads", "1", "--no-progress"]
ARCH = {"C_i": 16, "C_o": 32, "k": 3, "k_p": 2, "n": 128, "act": "relu"}
NEW_KEYS = {"weight_grad_clip": 5.0, "arch_beta1": 0.5, "arch_beta2": 0.999, "hypergrad_lr": 0.05,
            "data_seed_stride": 1009, "val_seed_offset": 7919, "hypergrad_seed_stride": 7, "fbnet_a": 0.2,
            "fbnet_b": 0.6, "dual_margin": 0.02, "fine_tune_lr_factor": 0.4, "verify_k": 3}


def cli_error(capsys, *argv: str) -> str:
    """Run ``hwnas ARGV`` in-process; assert exit 2 and exactly one ``hwnas: error:`` line; return it."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [s for s in err.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith("hwnas: error: "), err
    return lines[0]


def _has(line: str, *fragments: str) -> None:
    for f in fragments:
        assert f in line, line


# ---- 1. config numbers and types ------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "fragments"), [
    (["--lr", "nan"], ["lr must be a finite number in (0, 1000]", "got nan", "in flags"]),
    (["--arch-lr", "-0.1"], ["arch_lr must be a finite number in (0, 1000]", "got -0.1", "in flags"]),
    (["--arch-lr", "1e300"], ["arch_lr must be a finite number in (0, 1000]", "got 1e+300"]),
    (["--target-ms", "nan"], ["target_ms must be a finite number > 0 or null", "got nan", "in flags"]),
    (["--tau-max", "0.1", "--tau-min", "0.5"], ["tau_max must be >= tau_min", "tau_max 0.1", "tau_min 0.5"]),
    (["--tau-max", "0.3"], ["tau_max must be >= tau_min", "tau_min 0.5 (gumbel's default)", "--tau-min"]),
    (["--data-limit", "0"], ["data_limit must be a whole number > 0 or null", "got 0"]),
    (["--threads", "0"], ["threads must be a whole number > 0", "got 0"]),
    (["--hw-lambda", "-1", "--target-ms", "0.05"], ["hw_lambda must be a finite number >= 0", "got -1.0"]),
    (["--dual-lr", "0", "--target-ms", "0.05"], ["dual_lr must be a finite number > 0", "got 0.0"]),
    (["--seed", "-3"], ["seed must be a whole number >= 0", "got -3"]),
    (["--seeds", "0,-1"], ["seeds[1] must be a whole number >= 0", "got -1", "in flags"]),
    (["--seeds", "0,1.5"], ["--seeds must be comma-separated whole numbers", "'0,1.5'"]),
    (["--targets", "0.05,inf"], ["targets[1] must be a finite number > 0 or null", "got inf"]),
    (["--targets", "0.05,0.05"], ["targets must not repeat", "[0.05, 0.05]"]),
    (["--cpus-per-shard", "0", "--seeds", "0,1"], ["cpus_per_shard must be a finite number > 0", "in flags"]),
])
def test_bad_search_flags(capsys, tmp_path, flags, fragments):
    _has(cli_error(capsys, "search", *SMALL, *flags, "--out", tmp_path / "run"), *fragments)
    assert not (tmp_path / "run" / "history.jsonl").exists()


@pytest.mark.parametrize(("text", "fragments"), [
    ("epochs: 2.5", ["epochs must be a whole number > 0, got 2.5 in {cfg}"]),
    ("epochs: '3'", ["epochs must be a whole number > 0, got '3'", "without quotes", "in {cfg}"]),
    ("epochs: true", ["epochs must be a whole number > 0, got True"]),
    ("lr: .nan", ["lr must be a finite number in (0, 1000], got nan in {cfg}"]),
    ("momentum: 1", ["momentum must be a finite number in [0, 1), got 1 in {cfg}"]),
    ("weight_decay: -0.1", ["weight_decay must be a finite number >= 0"]),
    ("learn_dropout: 'yes'", ["learn_dropout must be true or false, got 'yes'"]),
    ("latency_table: 3", ["latency_table must be a string or null, got 3"]),
    ("ray: [1, 2]", ["'ray' in {cfg} must be a mapping of RayConfig keys", "[1, 2]"]),
    ("ray: {object_store_mb: 10}", ["object_store_mb must be a whole number >= 80, got 10",
                                   "in the ray: section of {cfg}"]),
    ("ray: {gpus_per_shard: 1.5}", ["gpus_per_shard above 1 must be a whole number", "1.5"]),
    ("ray: {max_restarts: 1.5}", ["max_restarts must be a whole number >= 0, got 1.5"]),
    ("seeds: 3", ["seeds must be a list (each a whole number >= 0), got 3"]),
    ("shards_per_target: '2'", ["shards_per_target must be a whole number > 0, got '2'"]),
    ("subspace: {k: 3}", ["subspace['k'] must be a list, got 3"]),
    ("space: mbconv\nspace_args: {widthz: [16]}",
     ["space_args key 'widthz' is not an argument of space 'mbconv' in {cfg}", "accepts: widths, depths"]),
    ("space: mbconv\nspace_args: {widths: [16, 2.5]}", ["space_args.widths[1] must be a whole number, got 2.5"]),
    ("space: mbconv\nspace_args: {widths: [16]}", ["do not build space 'mbconv'", "one entry per stage"]),
    ("space_args: {depth: 2}", ["space_args key 'depth'", "space 'seed-cnn' takes no space_args"]),
    # the keys that used to be hidden in the code have ranges too
    ("arch_beta2: 1.0", ["arch_beta2 must be a finite number in [0, 1), got 1.0"]),
    ("dual_margin: -0.1", ["dual_margin must be a finite number in [0, 1)"]),
    ("fbnet_b: 0", ["fbnet_b must be a finite number > 0, got 0"]),
    ("weight_grad_clip: .inf", ["weight_grad_clip must be a finite number > 0, got inf"]),
    ("hypergrad_lr: 0", ["hypergrad_lr must be a finite number in (0, 1000]"]),
    ("fine_tune_lr_factor: -1", ["fine_tune_lr_factor must be a finite number > 0"]),
    ("data_seed_stride: 0", ["data_seed_stride must be a whole number > 0, got 0"]),
    ("val_seed_offset: 1.5", ["val_seed_offset must be a whole number >= 0, got 1.5"]),
])
def test_bad_search_yaml(capsys, tmp_path, text, fragments):
    cfg = tmp_path / "x.yaml"
    cfg.write_text(text + "\n")
    line = cli_error(capsys, "search", "--config", cfg, "--no-progress", "--out", tmp_path / "run")
    _has(line, *(f.format(cfg=cfg) for f in fragments))


def test_flag_errors_say_flags_and_yaml_errors_say_the_file(capsys, tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("lr: 0.1\nmomentum: 0.5\n")
    _has(cli_error(capsys, "search", "--config", cfg, "--lr", "inf", "--out", tmp_path / "r"),
         "lr must be a finite number in (0, 1000], got inf in flags")
    cfg.write_text("lr: 0.1\nmomentum: 2\n")
    _has(cli_error(capsys, "search", "--config", cfg, "--lr", "0.2", "--out", tmp_path / "r"),
         f"momentum must be a finite number in [0, 1), got 2 in {cfg}")


def test_train_flags_and_yaml_are_checked(capsys, tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"space": "seed-cnn", "arch": ARCH}))
    _has(cli_error(capsys, "train", arch, "--lr", "nan", "--no-progress"),
         "lr must be a finite number in (0, 1000], got nan in flags")
    cfg = tmp_path / "t.yaml"
    cfg.write_text("momentum: -0.5\n")
    _has(cli_error(capsys, "train", arch, "--config", cfg, "--no-progress"),
         f"momentum must be a finite number in [0, 1), got -0.5 in {cfg}")


@pytest.mark.parametrize(("cls", "data", "fragment"), [
    (SearchConfig, {"epochs": 2.0}, "epochs must be a whole number > 0, got 2.0"),
    (TrainConfig, {"epochs": True}, "epochs must be a whole number > 0, got True"),
    (TrainConfig, {"lr": "0.1"}, "lr must be a finite number in (0, 1000], got '0.1'"),
    (SweepConfig, {"seeds": []}, "seeds must list at least one value"),
    (RayConfig, {"enabled": "no"}, "enabled must be true or false, got 'no'"),
    (RayConfig, {"num_cpus": 0}, "num_cpus must be a whole number > 0 or null, got 0"),
])
def test_every_config_dataclass_checks_its_fields(cls, data, fragment):
    with pytest.raises(FieldError) as err:
        from_dict(cls, data, "y.yaml")
    assert str(err.value).startswith(fragment) and " in y.yaml" in str(err.value), str(err.value)


def test_checked_values_are_normalised():
    cfg = SearchConfig(lr=1, tau_max=5, tau_min=1, subspace={"k": (3,)})
    assert type(cfg.lr) is float and type(cfg.tau_max) is float and cfg.subspace == {"k": [3]}
    assert SweepConfig(targets=(0.05, None), seeds=(0, 1)).targets == [0.05, None]
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict())) == cfg.to_dict()  # tuples would not dump


# ---- 2. hyperparameters that were hidden in the code ------------------------------------------------------

def test_hidden_hyperparameters_are_config_keys_with_todays_defaults(tmp_path):
    cfg = SearchConfig()
    assert {k: cfg.to_dict()[k] for k in NEW_KEYS} == NEW_KEYS
    assert TrainConfig().data_seed_stride == 1009


def test_search_state_uses_the_config_values(tmp_path):
    table = tmp_path / "t.json"
    save_table(synthetic_table(get_space("seed-cnn")), table)
    cfg = SearchConfig(arch_beta1=0.7, arch_beta2=0.99, hypergrad_lr=0.01, learn_dropout=True, weight_grad_clip=2.5,
                       latency_table=str(table), hw_loss="mul", fbnet_a=0.3, fbnet_b=0.9, dual_margin=0.05)
    st = SearchState(cfg, torch.device("cpu"))
    assert st.a_opt.param_groups[0]["betas"] == (0.7, 0.99) and st.h_opt.param_groups[0]["lr"] == 0.01
    assert st.grad_clip == 2.5 and (st.hw.a, st.hw.b, st.hw.margin) == (0.3, 0.9, 0.05)


def test_seed_offsets_come_from_the_config(monkeypatch):
    seeds: list[tuple[str, int]] = []
    real_loader, real_arch_step = loop.make_loader, loop.arch_step

    def loader(ds, batch_size, *, shuffle, seed=0, drop_last=False):
        seeds.append(("loader", seed))
        return real_loader(ds, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)

    def step(st, x, y, *, train_batch=None, seed=0):
        seeds.append(("hyper", seed))
        return real_arch_step(st, x, y, train_batch=train_batch, seed=seed)

    monkeypatch.setattr(loop, "make_loader", loader)
    monkeypatch.setattr(loop, "arch_step", step)
    cfg = SearchConfig(epochs=2, warmup_epochs=1, data_limit=100, batch_size=32, threads=1, seed=2,
                       data_seed_stride=10, val_seed_offset=3, hypergrad_seed_stride=100)
    loop.run_search(cfg, None, progress=False)
    loaders = [s for k, s in seeds if k == "loader" and s != 0]  # seed 0: the unshuffled evaluation loader
    assert loaders[:4] == [20, 23, 21, 24]  # epoch e: train seed*10 + e, val that + 3
    assert [s for k, s in seeds if k == "hyper"] == [200, 201, 202]  # 100 val samples: 3 batches of 32


def test_fine_tune_lr_factor_and_seed_stride_reach_the_fine_tune(monkeypatch, tmp_path):
    seen = {}
    cfg = SearchConfig(lr=0.1, fine_tune_lr_factor=0.25, data_seed_stride=13, epochs=2, warmup_epochs=1)
    space = get_space(cfg.space)

    def fake_search(c, d, **kw):
        return SearchResult(c.space, ARCH, space.arch_id(ARCH), {}, 0.5, [], Path(d), 1.0)

    def fake_train(space, arch, hparams, tcfg, **kw):
        seen["tcfg"] = tcfg
        return type("R", (), {"val_accuracy": 0.6})(), None

    verify = importlib.import_module("hwnas.search.verify")
    monkeypatch.setattr(sweep, "run_search", fake_search)
    monkeypatch.setattr(verify, "options", lambda c, d: [(ARCH, None, None)])  # no checkpoint: derive nothing
    monkeypatch.setattr(verify, "load_for", lambda *a, **k: None)
    monkeypatch.setattr(verify, "train_arch", fake_train)
    cand = sweep.run_shard(sweep.ShardSpec("s0", cfg), tmp_path / "s0")
    assert cand["accuracy"] == 0.6
    assert seen["tcfg"].lr == pytest.approx(0.025) and seen["tcfg"].data_seed_stride == 13


def test_old_run_without_the_new_keys_still_resumes(tmp_path):
    cfg = SearchConfig(epochs=2, warmup_epochs=1, data_limit=100, threads=1)
    first = loop.run_search(cfg, tmp_path, progress=False)
    path = tmp_path / "config.yaml"
    old = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k not in NEW_KEYS}
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    again = loop.run_search(cfg, tmp_path, progress=False)
    assert again.history == first.history and again.arch == first.arch


# ---- 3. latency tables are checked on load ----------------------------------------------------------------

def _bad_table(tmp_path: Path, edit) -> Path:
    obj = synthetic_table(get_space("seed-cnn")).to_json()
    obj["calibration"]["boundary"] = {u: 0.0 for u in obj["calibration"]["scales"]}
    obj["calibration"]["measured_ms"] = [0.1, 0.2, 0.3]
    edit(obj)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    return path


def _first_key(obj: dict) -> str:
    return sorted(obj["entries"])[0]


TABLE_EDITS = {
    "negative-scale": (lambda t: t["calibration"]["scales"].update(conv2=-1.0),
                       ["has calibration scales['conv2'] = -1.0", "finite number > 0", "hwnas latency calibrate --table"]),
    "nan-c0": (lambda t: t["calibration"].update(c0=math.nan),
               ["has calibration c0 = nan", "hwnas latency calibrate --table"]),
    "inf-boundary": (lambda t: t["calibration"]["boundary"].update(fc1=math.inf),
                     ["calibration boundary['fc1'] = inf", "hwnas latency calibrate --table"]),
    "negative-measurement": (lambda t: t["calibration"]["measured_ms"].__setitem__(1, -0.2),
                             ["calibration measured_ms[1] = -0.2", ">= 0"]),
    "nan-fit-score": (lambda t: t["calibration"].update(loo_mape=math.nan), ["calibration loo_mape = nan"]),
    "nan-entry": (lambda t: t["entries"][_first_key(t)].update(median_ms=math.nan),
                  ["malformed entry 'conv1|", "median_ms must be a finite number >= 0, got nan",
                   "hwnas profile --space seed-cnn --device test-1t --out"]),
    "negative-entry": (lambda t: t["entries"][_first_key(t)].update(median_ms=-0.01), ["median_ms", "-0.01"]),
    "inf-spread": (lambda t: t["entries"][_first_key(t)].update(spread=math.inf), ["spread", "inf"]),
    "nan-overhead-spread": (lambda t: t.update(overhead_spread=math.nan), ["overhead_spread", "nan"]),
    "negative-prediction": (lambda t: t["calibration"].update(c0=-1000.0),
                            ["its calibration predicts -", "a latency must be >= 0", "hwnas latency calibrate --table"]),
}


@pytest.mark.parametrize("case", sorted(TABLE_EDITS))
def test_bad_latency_table_is_one_line_naming_key_and_fix(capsys, tmp_path, case):
    edit, fragments = TABLE_EDITS[case]
    table = _bad_table(tmp_path, edit)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"space": "seed-cnn", "arch": ARCH}))
    _has(cli_error(capsys, "latency", "predict", arch, "--table", table), str(table), *fragments)


def test_search_refuses_a_bad_table_before_training(capsys, tmp_path):
    table = _bad_table(tmp_path, TABLE_EDITS["negative-scale"][0])
    line = cli_error(capsys, "search", "--latency-table", table, "--target-ms", "0.05", *SMALL, "--out", tmp_path / "r")
    _has(line, str(table), "scales['conv2'] = -1.0")
    assert not (tmp_path / "r" / "history.jsonl").exists()


def test_calibrate_replaces_a_broken_calibration(capsys, monkeypatch, tmp_path):
    """The fix the message names works: calibrate reads past the broken block and writes a good one."""
    table = _bad_table(tmp_path, TABLE_EDITS["nan-c0"][0])
    plain = LatencyModel(get_space("seed-cnn"), read_table(table, calibration=False), calibrated=False)
    # end-to-end "measurements" = the uncalibrated predictions (+5%): a deterministic, valid fit
    monkeypatch.setattr(calibrate, "measure_archs", lambda space, archs, *a, **k: [1.05 * plain.predict(x) for x in archs])
    assert main(["latency", "calibrate", "--table", str(table), "--samples", "8", *TINY_FLAGS, "--no-progress"]) == 0
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"space": "seed-cnn", "arch": ARCH}))
    capsys.readouterr()
    assert main(["latency", "predict", str(arch), "--table", str(table), "--json"]) == 0
    assert math.isfinite(json.loads(capsys.readouterr().out)["predicted_latency_ms"])


# ---- 4. a non-finite loss stops the search --------------------------------------------------------------

def test_nan_weight_loss_stops_the_search_and_keeps_the_last_checkpoint(capsys, monkeypatch, tmp_path):
    """The weights turn NaN at the start of epoch 2: one line naming the epoch, the loss and --lr; the
    checkpoint of epoch 1 is byte-for-byte what it was."""
    saved: dict[Path, bytes] = {}
    real_epoch = loop._run_epoch

    def poisoned(st, cfg, splits, device):
        if st.epoch == 1:
            saved.update({p: p.read_bytes() for p in tmp_path.glob("run/checkpoint.*")})
            with torch.no_grad():
                next(st.net.parameters()).fill_(math.nan)
        return real_epoch(st, cfg, splits, device)

    monkeypatch.setattr(loop, "_run_epoch", poisoned)
    line = cli_error(capsys, "search", "--epochs", "3", "--warmup-epochs", "1", "--data-limit", "100", "--threads", "1",
                     "--no-progress", "--out", tmp_path / "run")
    _has(line, "the weight loss", "became nan in epoch 2", "checkpoint of the last finished epoch", "lower --lr")
    assert saved, "epoch 1 wrote no checkpoint"
    assert {p: p.read_bytes() for p in tmp_path.glob("run/checkpoint.*")} == saved
    assert len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 1


def _state_and_batch(**cfg):
    st = SearchState(SearchConfig(threads=1, **cfg), torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    return st, torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)


def test_nan_weight_loss_does_not_step_the_optimiser():
    st, x, y = _state_and_batch()
    params = list(st.net.parameters())
    with torch.no_grad():
        params[0].fill_(math.nan)
    before = [p.detach().clone() for p in params[1:]]
    with pytest.raises(HwnasError, match=r"weight loss .* became nan in epoch 1.*lower --lr"):
        weight_step(st, x, y)
    assert not st.w_opt.state  # SGD never stepped (no momentum buffers)
    assert all(torch.equal(a, b) for a, b in zip(before, params[1:], strict=True))


def test_nan_architecture_loss_does_not_step_the_optimiser():
    st, x, y = _state_and_batch()
    alpha = st.relax.arch_parameters()
    with torch.no_grad():
        alpha[0].fill_(math.inf)
    before = [a.detach().clone() for a in alpha]
    with pytest.raises(HwnasError, match=r"architecture loss .* became nan in epoch 1.*lower --arch-lr"):
        arch_step(st, x, y)
    assert not st.a_opt.state
    assert all(torch.equal(a, b) for a, b in zip(before[1:], alpha[1:], strict=True))


def test_non_finite_architecture_step_is_caught_at_that_step():
    """A finite loss whose step still leaves a NaN logit (here: a NaN gradient) stops at that step, blaming
    --arch-lr, instead of surfacing later as a NaN weight loss blamed on --lr."""
    st, x, y = _state_and_batch()
    st.relax.arch_parameters()[0].register_hook(lambda g: g * math.nan)
    with pytest.raises(HwnasError, match=r"architecture logit .* became nan in epoch 1.*lower --arch-lr"):
        arch_step(st, x, y)


# ---- 5. arch files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("obj", "fragments"), [
    ({"space": "seed-cnn", "arch": {**ARCH, "C_i": 64.0}}, ["C_i=64.0 is not a choice", "a float", "[16, 32, 64]"]),
    ({"space": "seed-cnn", "arch": ARCH, "hparams": "0.1"}, ["'hparams' must be a mapping", "dropout in [0, 0.5]"]),
    ({"space": "seed-cnn", "arch": ARCH, "hparams": [0.1]}, ["'hparams' must be a mapping"]),
    ({"space": "seed-cnn", "arch": ARCH, "hparams": {"dropout": "0.1"}}, ["dropout='0.1' is not in space"]),
    ({"space": "seed-cnn", "arch": ARCH, "hparams": {"dropout": math.nan}}, ["dropout=nan", "finite numbers"]),
    ({"space": "seed-cnn", "arch": ARCH, "hparams": {"dropout": True}}, ["dropout=True"]),
    ({"space": "toy-optimum", "arch": {"c": True, "n": 64}}, ["c=True is not a choice", "a bool", "[1, 16]"]),
])
def test_bad_arch_file(capsys, tmp_path, obj, fragments):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(obj))
    _has(cli_error(capsys, "train", path, "--epochs", "1", "--no-progress"), *fragments)
    _has(cli_error(capsys, "latency", "predict", path, "--table", tmp_path / "none.json"), *fragments)


def test_validate_returns_the_declared_values():
    space = get_space("seed-cnn")
    arch = space.validate({**ARCH, "C_i": np.int64(16)})
    assert type(arch["C_i"]) is int
    with pytest.raises(ArchError, match="k=3.0"):
        space.validate({**ARCH, "k": 3.0})
