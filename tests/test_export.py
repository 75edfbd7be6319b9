"""``hwnas export``: real torch export, real onnxruntime sessions, tiny search runs made once per module."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT, budget_ms, host_table, run_cli

import hwnas
from hwnas._ckpt import save_state
from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.export import PARITY_TOLERANCE, LatencyGapWarning, export
from hwnas.latency.protocol import Protocol
from hwnas.search.retrain import inherit_weights
from hwnas.space import get_space

FAST = Protocol(runs=30, trials=2, warmup_runs=3, warmup_s=0.01)
pytestmark = pytest.mark.filterwarnings("ignore::hwnas.export.LatencyGapWarning")
TINY = dict(relaxation="single-path", epochs=2, warmup_epochs=1, threads=1)


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seed") / "run"
    hwnas.search(out=out, data_limit=200, **TINY)
    return out


@pytest.fixture(scope="module")
def mb_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mb") / "run"
    hwnas.search(out=out, dataset="fake", space="mbconv", data_limit=64, **TINY)
    return out


@pytest.fixture(scope="module")
def seed_export(seed_run, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("exp") / "plain"
    with warnings.catch_warnings():  # FAST timing is too short to match the table; the gap test checks this
        warnings.simplefilter("ignore", LatencyGapWarning)
        return out, export(seed_run, out, protocol=FAST)


def _x(space, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *space.input_shape)).astype(np.float32)


def _sess(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _no_leftovers(out: Path) -> None:
    assert not out.exists()
    assert not [p.name for p in out.parent.glob(f".{out.name}.*")]


# ---- plain export ------------------------------------------------------------------------------------
def test_plain_export_writes_a_checked_manifest(seed_run, seed_export):
    out, m = seed_export
    arch_json = json.loads((seed_run / "arch.json").read_text())
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(m))
    assert (m["space"], m["arch"], m["arch_id"]) == (arch_json["space"], arch_json["arch"], arch_json["arch_id"])
    assert m["input"]["shape"] == [1, 1, 28, 28] and m["opset"] == 17 and not m["dynamic_batch"]
    assert 0 <= m["parity_max_abs_err"] <= m["parity_tolerance"]
    assert PARITY_TOLERANCE <= m["parity_tolerance"] <= 1e-2 and "max |torch logit|" in m["parity_tolerance_rule"]
    assert 0.0 <= m["accuracy"] <= 1.0 and m["accuracy_samples"] == 200
    assert m["measured_latency_ms"] > 0
    if m["predicted_latency_ms"] is None:
        assert "latency table" in m["latency_note"]
    else:
        assert m["predicted_latency_ms"] > 0 and (ROOT / m["latency_table"]).is_file()  # relative to the repo
    assert set(m["versions"]) == {"hwnas", "torch", "onnx", "onnxruntime"}
    assert set(m["files"]) == {"model.onnx", "README.md"}  # every file but the manifest itself
    for name, info in m["files"].items():
        data = (out / name).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "manifest.json", "model.onnx"]
    _no_leftovers(out.parent / "nothing-here")


def test_plain_export_matches_torch_and_reports_onnxruntime_accuracy(seed_run, seed_export):
    out, m = seed_export
    space = get_space("seed-cnn")
    module = inherit_weights(space, m["arch"], {}, seed_run).eval()
    x = _x(space, 8)
    sess = _sess(out / "model.onnx")
    got = np.concatenate([sess.run(["y"], {"x": x[i:i + 1]})[0] for i in range(8)])
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= PARITY_TOLERANCE
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # fixed batch 1
        sess.run(["y"], {"x": x[:2]})
    # the accuracy in the manifest is onnxruntime's on the run's test split (digits, limit 200)
    from hwnas.search._runtime import load_for

    test = load_for(space, "digits", None, 0, 200).test
    xs, ys = test.tensors[0].numpy(), test.tensors[1].numpy()
    preds = np.array([sess.run(["y"], {"x": xs[i:i + 1]})[0].argmax() for i in range(len(ys))])
    assert m["accuracy"] == pytest.approx(float((preds == ys).mean()))


def test_batchnorm_is_folded_on_mbconv(mb_run, tmp_path):
    space = get_space("mbconv")
    arch = json.loads((mb_run / "arch.json").read_text())["arch"]
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in space.build(arch).modules())
    m = export(mb_run, tmp_path / "mb", protocol=FAST)
    graph = onnx.load(str(tmp_path / "mb" / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    assert m["batchnorm_folded"] and "BatchNormalization" not in m["ops"]
    assert m["parity_max_abs_err"] <= PARITY_TOLERANCE and m["input"]["shape"] == [1, *space.input_shape]


def test_latency_gap_warns_and_is_recorded(seed_run, tmp_path):
    table = json.loads(host_table("seed-cnn").read_text())  # this machine's: only it is measured here
    table["calibration"]["c0"] += 5.0  # predictions 5 ms too high
    path = tmp_path / "seed-cnn.json"
    path.write_text(json.dumps(table))
    with pytest.warns(LatencyGapWarning, match="away from the predicted"):
        m = export(seed_run, tmp_path / "gap", latency_table=path, protocol=FAST)
    assert m["latency_table"] == f"{path.parent.name}/{path.name}" and m["latency_gap"] > 0.1 and "recalibrate" in m["latency_warning"]
    assert m["predicted_latency_ms"] > 5.0


# ---- flags -------------------------------------------------------------------------------------------
def test_dynamic_batch_runs_batch_4_in_onnxruntime(seed_run, seed_export, tmp_path):
    m = export(seed_run, tmp_path / "dyn", dynamic_batch=True, protocol=FAST)
    assert m["dynamic_batch"] and m["input"]["shape"][0] == "batch"
    model = onnx.load(str(tmp_path / "dyn" / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    space = get_space("seed-cnn")
    x = _x(space, 4, seed=1)
    y4 = _sess(tmp_path / "dyn" / "model.onnx").run(["y"], {"x": x})[0]
    fixed = _sess(seed_export[0] / "model.onnx")
    y1 = np.concatenate([fixed.run(["y"], {"x": x[i:i + 1]})[0] for i in range(4)])
    assert y4.shape == (4, 10) and np.abs(y4 - y1).max() <= PARITY_TOLERANCE


def test_ort_format_loads_and_matches(seed_run, tmp_path, capsys):
    out = tmp_path / "ort"
    m = export(seed_run, out, ort=True, protocol=FAST)
    assert capsys.readouterr().out == ""  # the converter's progress lines stay out of stdout (--json)
    assert {"model.onnx", "model.ort", "model.required_operators.config"} <= set(m["files"])
    assert "Conv" in (out / "model.required_operators.config").read_text()
    x = _x(get_space("seed-cnn"), 1, seed=2)
    a = _sess(out / "model.ort").run(["y"], {"x": x})[0]
    b = _sess(out / "model.onnx").run(["y"], {"x": x})[0]
    assert np.abs(a - b).max() <= PARITY_TOLERANCE and m["ort"]["max_abs_err_vs_onnx"] <= PARITY_TOLERANCE
    assert not list(out.glob("_ort*"))


def test_int8_is_quantised_timed_and_compared(seed_run, tmp_path, capsys):
    out = tmp_path / "int8"
    m = export(seed_run, out, int8=True, protocol=FAST)
    q = m["int8"]
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert q["format"] == "QDQ" and "per channel" in q["weights"] and 0 <= q["accuracy"] <= 1
    assert 0.5 <= q["agreement_with_fp32"] <= 1.0  # same decisions on most test images
    assert q["measured_latency_ms"] > 0 and q["faster_than_fp32"] == (q["measured_latency_ms"] < m["measured_latency_ms"])
    assert ("note" in q) == (not q["faster_than_fp32"])
    assert "model.int8.onnx" in m["files"]
    from hwnas.commands.export import _summary

    _summary(m)
    printed = capsys.readouterr().out
    assert "int8: accuracy" in printed and (q["faster_than_fp32"] or "int8 is not faster" in printed)


def test_weights_file_from_hwnas_train(seed_run, tmp_path):
    obj = json.loads((seed_run / "arch.json").read_text())
    space = get_space("seed-cnn")
    torch.manual_seed(3)
    module = space.build(obj["arch"]).eval()
    ckpt = tmp_path / "w.safetensors"
    save_state(ckpt, module.state_dict(), kind="weights",
               meta={"space": "seed-cnn", "space_args": {}, "arch": obj["arch"], "hparams": {}})
    out = tmp_path / "w"
    m = export(seed_run, out, weights=ckpt, protocol=FAST)
    x = _x(space, 1, seed=4)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    assert np.abs(_sess(out / "model.onnx").run(["y"], {"x": x})[0] - ref).max() <= PARITY_TOLERANCE
    assert m["weights"] == ckpt.name  # no absolute path in a manifest


def test_arch_all_and_ids_on_a_sweep(tmp_path):
    run = tmp_path / "sweep"
    sweep = hwnas.search(out=run, targets=[budget_ms(0.15), budget_ms(0.4)], data_limit=100, fine_tune_epochs=0,
                         ray=False, **TINY)
    front = sweep.pareto
    m = export(run, tmp_path / "all", arch="all", protocol=FAST)
    assert [e["arch_id"] for e in m["exports"]] == [c["arch_id"] for c in front]
    for c in front:
        sub = tmp_path / "all" / c["arch_id"]
        assert json.loads((sub / "manifest.json").read_text())["arch"] == c["arch"]
        assert (sub / "model.onnx").is_file()
    index = json.loads((tmp_path / "all" / "manifest.json").read_text())
    assert [e["folder"] for e in index["exports"]] == [c["arch_id"] for c in front]
    best = max(front, key=lambda c: c["accuracy"])
    assert export(run, tmp_path / "best", protocol=FAST)["arch_id"] == best["arch_id"]
    last = front[-1]
    m1 = export(run, tmp_path / "one", arch=last["arch_id"], protocol=FAST)
    assert m1["arch_id"] == last["arch_id"] and f"shards/{last['shard']}" in m1["weights"]


# ---- bad input: one line on stderr, exit 2, nothing left behind -------------------------------------
def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _fails(capsys, args: list[str], out: Path, *fragments: str) -> None:
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hwnas: error:") and "Traceback" not in err
    for frag in fragments:
        assert frag in err, err
    _no_leftovers(out)


def test_corrupted_checkpoint(seed_run, tmp_path, capsys):
    run = _copy(seed_run, tmp_path)
    (run / "checkpoint.safetensors").write_bytes(b"\x00garbage" * 100)
    _fails(capsys, ["export", str(run)], tmp_path / "o", "checkpoint", "corrupted", "rerun")


def test_truncated_checkpoint(seed_run, tmp_path, capsys):
    run = _copy(seed_run, tmp_path)
    data = (run / "checkpoint.safetensors").read_bytes()
    (run / "checkpoint.safetensors").write_bytes(data[: len(data) // 2])
    _fails(capsys, ["export", str(run)], tmp_path / "o", "checkpoint", "rerun")


def test_weights_for_another_arch(seed_run, tmp_path, capsys):
    obj = json.loads((seed_run / "arch.json").read_text())
    space = get_space("seed-cnn")
    other = next(a for a in space.enumerate() if a != obj["arch"])
    ckpt = tmp_path / "other.safetensors"
    save_state(ckpt, space.build(other).state_dict(), kind="weights",
               meta={"space": "seed-cnn", "space_args": {}, "arch": other, "hparams": {}})
    _fails(capsys, ["export", str(seed_run), "--weights", str(ckpt)], tmp_path / "o",
           space.arch_id(other), "--arch")
    # same arch label but tensors of another shape (no arch recorded in the file)
    save_state(ckpt, space.build(other).state_dict(), kind="weights", meta={"space": "seed-cnn"})
    _fails(capsys, ["export", str(seed_run), "--weights", str(ckpt)], tmp_path / "o", "do not fit", "hwnas train")


def test_weights_of_another_space(seed_run, mb_run, tmp_path, capsys):
    mb = get_space("mbconv")
    arch = json.loads((mb_run / "arch.json").read_text())["arch"]
    ckpt = tmp_path / "mb.safetensors"
    save_state(ckpt, mb.build(arch).state_dict(), kind="weights",
               meta={"space": "mbconv", "space_args": {}, "arch": arch, "hparams": {}})
    _fails(capsys, ["export", str(seed_run), "--weights", str(ckpt)], tmp_path / "o", "mbconv", "seed-cnn")


def test_arch_of_another_space(seed_run, mb_run, tmp_path, capsys):
    run = _copy(seed_run, tmp_path)
    shutil.copy(mb_run / "arch.json", run / "arch.json")
    _fails(capsys, ["export", str(run)], tmp_path / "o", "mbconv", "seed-cnn")


def test_unknown_arch_id(seed_run, tmp_path, capsys):
    arch_id = json.loads((seed_run / "arch.json").read_text())["arch_id"]
    _fails(capsys, ["export", str(seed_run), "--arch", "deadbeef0000"], tmp_path / "o", "deadbeef0000", arch_id)


def test_run_dir_without_arch_json(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["export", str(tmp_path / "empty")], tmp_path / "o", "no arch.json", "hwnas search")
    _fails(capsys, ["export", str(tmp_path / "missing")], tmp_path / "o", "does not exist")


def test_failed_export_keeps_the_previous_one(seed_run, seed_export, tmp_path):
    out = tmp_path / "keep"
    shutil.copytree(seed_export[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(HwnasError, match="no such arch id"):
        export(seed_run, out, arch="nope", protocol=FAST)
    run = _copy(seed_run, tmp_path)
    (run / "checkpoint.safetensors").write_bytes(b"junk")
    with pytest.raises(HwnasError, match="corrupted"):
        export(run, out, protocol=FAST)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(tmp_path.glob(".keep.*"))
    # a folder that is not an export is never replaced
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(HwnasError, match="not an hwnas export"):
        export(seed_run, tmp_path / "notes", protocol=FAST)
    assert (tmp_path / "notes" / "a.txt").read_text() == "mine"


def test_cli_subprocess_bad_input_and_help(tmp_path):
    proc = run_cli("export", str(tmp_path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no arch.json" in proc.stderr
    helped = run_cli("export", "--help")
    assert helped.returncode == 0
    for flag in ("--arch", "--weights", "--opset", "--ort", "--int8", "--dynamic-batch", "--latency-table",
                 "--out", "examples:"):
        assert flag in helped.stdout


def test_parity_failure_is_an_error_and_leaves_nothing(seed_run, tmp_path, monkeypatch):
    from hwnas.export import _onnx

    real = _onnx.torch_outputs
    monkeypatch.setattr(_onnx, "torch_outputs", lambda module, x: real(module, x) + 1e-2)
    out = tmp_path / "bad"
    with pytest.raises(HwnasError, match="differ by .* tolerance"):
        export(seed_run, out, protocol=FAST)
    _no_leftovers(out)


def test_cli_exports_with_the_tables_protocol(seed_run, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["export", str(seed_run), "--dynamic-batch", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert f"arch {m['arch_id']}: accuracy" in printed and f"wrote {out}/manifest.json" in printed
    assert m["dynamic_batch"] and m["latency_protocol"]["runs"] >= 200  # the table's (or the default) protocol


def test_unsupported_opset(seed_run, tmp_path, capsys):
    _fails(capsys, ["export", str(seed_run), "--opset", "9"], tmp_path / "o", "--opset 9", "17")
