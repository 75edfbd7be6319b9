"""The CLI: help that teaches, and bad input that gives one line naming the fix (no traceback)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from hwnas.cli import build_parser


def _one_line_error(r, *fragments: str) -> None:
    assert r.returncode != 0
    lines = [s for s in r.stderr.splitlines() if s.strip()]
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_help_lists_every_command_and_option():
    parser = build_parser()
    text = parser.format_help()
    for cmd in ("spaces", "search", "train"):
        assert cmd in text
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"hwnas {name} {action.option_strings} has no help"


def test_spaces_lists_sizes_and_shapes():
    r = run_cli("spaces", "--json")
    assert r.returncode == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["seed-cnn"]["size"] == 216 and rows["seed-cnn"]["input_shape"] == [1, 28, 28]
    assert rows["mbconv"]["input_shape"] == [3, 32, 32]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--space", "resnet"], ["unknown search space 'resnet'", "seed-cnn"]),
        (["--relaxation", "enas"], ["unknown relaxation 'enas'", "single-path"]),
        (["--dataset", "imagenet"], ["unknown dataset 'imagenet'", "digits"]),
        (["--dataset", "mnist"], ["--data-root"]),
        (["--dataset", "mnist", "--data-root", "/nonexistent/mnist"], ["/nonexistent/mnist"]),
        (["--space", "mbconv"], ["3x32x32", "cifar10"]),
        (["--epochs", "2", "--warmup-epochs", "2"], ["warmup_epochs"]),
    ],
)
def test_search_bad_input(tmp_path, args, fragments):
    _one_line_error(run_cli("search", *args, "--out", str(tmp_path / "run"), "--no-progress"), "hwnas: error:", *fragments)


@pytest.mark.parametrize(
    ("arch", "fragments"),
    [
        ({"C_i": 16, "C_o": 16, "k": 3, "k_p": 2, "n": 128, "act": "relu", "depth": 2}, ["'depth'", "labels are"]),
        ({"C_i": 16, "C_o": 16, "k": 7, "k_p": 2, "n": 128, "act": "relu"}, ["k=7", "pick one of [3, 5]"]),
        ({"C_i": 16, "C_o": 16, "k": 3, "k_p": 2, "n": 128}, ["missing", "act"]),
    ],
)
def test_train_bad_arch_file(tmp_path, arch, fragments):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"space": "seed-cnn", "arch": arch}))
    _one_line_error(run_cli("train", str(path), "--no-progress"), "hwnas: error:", *fragments)


def test_train_missing_or_broken_arch_file(tmp_path):
    _one_line_error(run_cli("train", str(tmp_path / "nope.json")), "does not exist")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _one_line_error(run_cli("train", str(bad)), "not valid JSON")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"space": "vit", "arch": {}}))
    _one_line_error(run_cli("train", str(other)), "unknown search space 'vit'")


def test_train_inherit_from_a_folder_without_checkpoint(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"space": "seed-cnn",
                                "arch": {"C_i": 16, "C_o": 16, "k": 3, "k_p": 2, "n": 128, "act": "relu"}}))
    _one_line_error(run_cli("train", str(path), "--inherit", str(tmp_path)), "no checkpoint.safetensors", "hwnas search")


def test_train_save_writes_weights_and_never_clobbers_other_files(tmp_path, capsys):
    """--save refuses, before training, a run folder's own file names, any path inside a run folder and an
    existing file that an earlier --save did not write; it writes a weights file that loads into the arch."""
    import torch

    from hwnas._ckpt import load_state, save_state
    from hwnas.cli import main
    from hwnas.space import get_space

    arch = {"C_i": 16, "C_o": 16, "k": 3, "k_p": 2, "n": 128, "act": "relu"}
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"space": "seed-cnn", "arch": arch}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("space: seed-cnn\n")
    (run / "history.jsonl").write_text("")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    search_ckpt = save_state(tmp_path / "s.safetensors", {"net": {}}, kind="search")
    train = ["train", str(path), "--epochs", "1", "--data-limit", "64", "--threads", "1", "--no-progress"]
    for target, fragment in [(run / "w.safetensors", "inside the run folder"),
                             (run / "sub" / "w.safetensors", "inside the run folder"),
                             (tmp_path / "checkpoint.safetensors", "run folder's own file"),
                             (tmp_path / "pareto.json", "run folder's own file"),
                             (notes, "not an hwnas weights file"), (search_ckpt, "not an hwnas weights file"),
                             (tmp_path, "is a folder")]:
        assert main([*train, "--save", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("hwnas: error: --save") and fragment in err, err
    assert notes.read_text() == "mine" and not (run / "w.safetensors").exists()
    out = tmp_path / "w" / "digits.safetensors"
    for _ in range(2):  # the second run replaces the first run's weights file
        assert main([*train, "--save", str(out)]) == 0
    state, meta = load_state(out, kind="weights", what="--weights", fix="")
    data = meta.pop("data")  # what the weights were trained on: `hwnas export ARCH --weights` checks it
    assert meta == {"space": "seed-cnn", "space_args": {}, "arch": arch, "hparams": {}}
    assert data["dataset"] == "digits" and data["seed"] == 0 and "input_size" in data
    model = get_space("seed-cnn").build(arch)
    model.load_state_dict(state, strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_config_file_with_unknown_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("space: seed-cnn\nepochz: 3\n")
    _one_line_error(run_cli("search", "--config", str(cfg), "--out", str(tmp_path / "r")), "epochz", "known keys")


def test_a_sweep_without_budgets_prints_its_front(tmp_path, capsys):
    """Shards without a latency budget neither predict nor measure: the front shows '-' for both."""
    from hwnas.cli import main

    rc = main(["search", "--space", "seed-cnn", "--dataset", "digits", "--seeds", "0,1", "--epochs", "2",
               "--warmup-epochs", "1", "--fine-tune-epochs", "0", "--data-limit", "100", "--threads", "1",
               "--no-ray", "--no-report", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = [line.split() for line in out.splitlines() if line.startswith("s0 ") or line.startswith("s1 ")]
    assert rows and all(r[3] == "-" and r[4] == "-" for r in rows), out
