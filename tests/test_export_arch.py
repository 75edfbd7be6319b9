"""``hwnas export ARCH --weights W``: an arch outside a run (an arch file or a named arch) with the weights of
``hwnas train ARCH --save W``, tested on the data those weights record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_cli

from hwnas._ckpt import load_state, save_state
from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.export import export
from hwnas.latency.protocol import Protocol
from hwnas.search._runtime import load_for
from hwnas.space import get_space

FAST = Protocol(runs=30, trials=2, warmup_runs=3, warmup_s=0.01)
pytestmark = pytest.mark.filterwarnings("ignore::hwnas.export.LatencyGapWarning",
                                        "ignore::hwnas.latency.TableWarning")
SPACE = get_space("seed-cnn")
ARCH = next(iter(SPACE.enumerate()))  # no named seed-cnn arch is registered: an arch file of it instead


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """``(arch file, weights)``: a seed-cnn arch trained 1 epoch on 200 digits by ``hwnas train --save``."""
    folder = tmp_path_factory.mktemp("arch")
    arch_file = folder / "my-arch.json"
    arch_file.write_text(json.dumps(SPACE.to_json(ARCH)))
    weights = folder / "w.safetensors"
    proc = run_cli("train", str(arch_file), "--epochs", "1", "--dataset", "digits", "--data-limit", "200",
                   "--threads", "1", "--no-progress", "--save", str(weights))
    assert proc.returncode == 0, proc.stderr
    return arch_file, weights


def _meta(weights: Path) -> dict:
    return load_state(weights, kind="weights", what="--weights", fix="")[1]


def _fails(capsys, args: list[str], *fragments: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hwnas: error:") and "Traceback" not in err, err
    for frag in fragments:
        assert frag in err, err
    return err


def test_train_save_records_its_data(trained):
    meta = _meta(trained[1])
    assert meta["space"] == "seed-cnn" and meta["arch"] == ARCH
    data = meta["data"]
    assert (data["dataset"], data["data_limit"], data["seed"], data["data_root"]) == ("digits", 200, 0, None)
    for key in ("input_size", "normalize_mean", "normalize_std", "augment_crop", "augment_flip", "download"):
        assert key in data
    assert "threads" not in data and "device" not in data  # how it ran, not what it saw


def test_cli_exports_an_arch_file_with_its_weights(trained, tmp_path):
    arch_file, weights = trained
    out = tmp_path / "exp"
    proc = run_cli("export", str(arch_file), "--weights", str(weights), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"arch {SPACE.arch_id(ARCH)}: accuracy" in proc.stdout and f"wrote {out}/manifest.json" in proc.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert (m["space"], m["arch"], m["arch_id"]) == ("seed-cnn", ARCH, SPACE.arch_id(ARCH))
    assert m["arch_source"] == "arch file my-arch.json" and m["weights"] == "w.safetensors"
    assert "trained on" in m["data_source"] and "digits" in m["accuracy_kind"]
    assert 0.0 <= m["accuracy"] <= 1.0 and m["accuracy_samples"] == 200  # the weights' data_limit, not digits' 360
    assert 0 <= m["parity_max_abs_err"] <= m["parity_tolerance"] <= 1e-2
    assert "run_dir" not in m and "my-arch.json" in (out / "README.md").read_text()
    # the file runs in onnxruntime and scores the manifest's accuracy on the split the weights were trained with
    splits = load_for(SPACE, "digits", None, 0, 200)
    x, y = splits.test.tensors[0].numpy().astype(np.float32), splits.test.tensors[1].numpy()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(["y"], {"x": x[i:i + 1]})[0] for i in range(len(x))])
    assert logits.shape == (200, SPACE.num_classes) and np.isfinite(logits).all()
    assert float((logits.argmax(1) == y).mean()) == pytest.approx(m["accuracy"])


def test_arch_without_weights_is_a_clean_error(trained, tmp_path, capsys):
    arch_file = trained[0]
    for ref in (str(arch_file), "proxyless:proxylessnas-mobile"):
        _fails(capsys, ["export", ref, "--out", str(tmp_path / "o")], "--weights", f"hwnas train {ref}",
               "--save")
        assert not (tmp_path / "o").exists()
    proc = run_cli("export", "proxyless:proxylessnas-mobile", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("hwnas: error:") and "--weights" in proc.stderr and "hwnas train" in proc.stderr


def test_weights_of_another_arch_or_space_are_refused(trained, tmp_path, capsys):
    arch_file = trained[0]
    other = next(a for a in SPACE.enumerate() if a != ARCH)
    ckpt = tmp_path / "other.safetensors"
    save_state(ckpt, SPACE.build(other).state_dict(), kind="weights",
               meta={"space": "seed-cnn", "space_args": {}, "arch": other, "hparams": {}})
    _fails(capsys, ["export", str(arch_file), "--weights", str(ckpt), "--out", str(tmp_path / "o")],
           SPACE.arch_id(other), SPACE.arch_id(ARCH), "hwnas train")
    # seed-cnn weights for the named proxyless arch: named before any data is loaded
    _fails(capsys, ["export", "proxyless:proxylessnas-mobile", "--weights", str(trained[1]), "--out",
                    str(tmp_path / "o")], "seed-cnn", "proxyless")
    assert not (tmp_path / "o").exists()


def test_old_weights_without_data_export_on_digits(trained, tmp_path):
    arch_file, weights = trained
    state, meta = load_state(weights, kind="weights", what="--weights", fix="")
    old = tmp_path / "old.safetensors"
    save_state(old, state, kind="weights", meta={k: v for k, v in meta.items() if k != "data"})
    m = export(arch_file, tmp_path / "exp", weights=old, protocol=FAST)
    assert m["arch_id"] == SPACE.arch_id(ARCH) and m["arch_source"] == "arch file my-arch.json"
    assert "digits, the default" in m["data_source"] and "old.safetensors" in m["data_source"]
    assert m["accuracy_samples"] == 360  # the whole digits test split: no limit was recorded
    assert m["parity_max_abs_err"] <= m["parity_tolerance"]


def test_one_arch_only_and_clear_errors(trained, tmp_path, capsys):
    arch_file, weights = trained
    out = str(tmp_path / "o")
    _fails(capsys, ["export", str(arch_file), "--weights", str(weights), "--arch", "all", "--out", out],
           "--arch all", "one arch")
    _fails(capsys, ["export", str(tmp_path / "missing"), "--out", out], "does not exist", "run folder", "arch file",
           "SPACE:NAME")
    bad = tmp_path / "bad.safetensors"
    state, meta = load_state(weights, kind="weights", what="--weights", fix="")
    save_state(bad, state, kind="weights", meta={**meta, "data": {**meta["data"], "data_limit": -3}})
    with pytest.raises(HwnasError, match="data_limit.*hwnas train"):
        export(arch_file, out, weights=bad, protocol=FAST)
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))
