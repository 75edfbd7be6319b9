"""``hwnas profile`` / ``hwnas latency ...`` from the command line: outputs and one-line errors."""

from __future__ import annotations

import json
import random

import pytest
from conftest_latency import TINY_FLAGS, assert_one_line_error, run_hwnas, synthetic_table

from hwnas.cli import main
from hwnas.latency import LatencyModel, load_table, save_table
from hwnas.space import get_space


@pytest.fixture()
def seed_setup(tmp_path):
    space = get_space("seed-cnn")
    table = tmp_path / "seed-cnn.json"
    save_table(synthetic_table(space, seed=7), table)
    arch = space.sample(random.Random(3))
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(space.to_json(arch)))
    return space, table, arch, arch_file


def test_predict_json_prints_the_model_prediction(seed_setup):
    space, table, arch, arch_file = seed_setup
    proc = run_hwnas("latency", "predict", "--table", str(table), str(arch_file), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"predicted_latency_ms"}
    assert out["predicted_latency_ms"] == pytest.approx(LatencyModel.load(table).predict(arch), rel=1e-12)


def test_predict_plain_text(seed_setup, capsys):
    _, table, arch, arch_file = seed_setup
    assert main(["latency", "predict", "--table", str(table), str(arch_file)]) == 0
    assert capsys.readouterr().out.strip().endswith(" ms")


def test_bad_input_in_a_real_process_gives_one_line_without_traceback(seed_setup, tmp_path):
    space, table, arch, arch_file = seed_setup
    broken = tmp_path / "broken.json"
    broken.write_text(table.read_text()[:200])
    assert_one_line_error(run_hwnas("latency", "predict", "--table", str(broken), str(arch_file)),
                          "corrupted or truncated")


@pytest.mark.parametrize("argv, fragment", [
    (["latency", "predict", "--table", "{table}", "{mb_arch}"], "is for space 'seed-cnn', not 'mbconv'"),
    (["profile", "--space", "nope", "--out", "{tmp}/x.json"], "unknown search space 'nope'"),
    (["latency", "validate", "--table", "{tmp}/missing.json"], "does not exist"),
    (["latency", "calibrate", "--table", "{table}", "--samples", "0"], "--samples must be >= 1"),
    (["latency", "validate", "--table", "{table}", "--seed", "0"], "equals the calibration seed"),
    (["latency", "calibrate", "--table", "{partial}"], "hwnas profile --space seed-cnn --device test-1t"),
    (["profile", "--space", "seed-cnn", "--out", "{broken}"], "corrupted or truncated"),
    (["latency", "predict", "{table}"], "is not an arch file"),
    (["latency", "calibrate", "--table", "{table}", "--runs", "0"], "runs must be an integer >= 1"),
])
def test_user_errors_exit_2_with_one_line(seed_setup, tmp_path, capsys, argv, fragment):
    space, table, _, _ = seed_setup
    partial = tmp_path / "partial.json"
    save_table(synthetic_table(space, complete=False), partial)
    broken = tmp_path / "broken.json"
    broken.write_text("{\"schema\": ")
    mb = get_space("mbconv")
    mb_arch = tmp_path / "mb_arch.json"
    mb_arch.write_text(json.dumps(mb.to_json(mb.sample(random.Random(0)))))
    files = {p: p.read_bytes() for p in (table, partial, broken)}
    argv = [a.format(table=table, partial=partial, broken=broken, mb_arch=mb_arch, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = [s for s in capsys.readouterr().err.splitlines() if s.strip()]
    assert len(err) == 1 and err[0].startswith("hwnas: error:") and fragment in err[0], err
    assert all(p.read_bytes() == b for p, b in files.items()), "a failing command changed a file"


def test_calibrate_then_validate_with_real_sessions(tmp_path, capsys):
    """End to end on a real (tiny-protocol) table of the small mbconv-like space: numbers exist, files valid."""
    space = get_space("seed-cnn")
    table = tmp_path / "seed.json"
    save_table(synthetic_table(space, seed=2, calibrated=False), table)
    assert main(["latency", "calibrate", "--table", str(table), "--samples", "5", "--no-progress", *TINY_FLAGS]) == 0
    cal = load_table(table).calibration
    assert cal["n_samples"] == 5 and len(cal["arch_ids"]) == 5 and cal["seed"] == 0 and "c0" in cal
    out = tmp_path / "val.json"
    assert main(["latency", "validate", "--table", str(table), "--samples", "6", "--json", str(out), "--no-progress",
                 *TINY_FLAGS]) == 0
    report = json.loads(out.read_text())
    keys = {"mape", "within_5pct", "within_10pct", "kendall_tau", "max_abs_pct_err", "bias_pct", "constraint_precision"}
    assert keys <= set(report) and keys <= set(report["additive_baseline"])
    assert report["n"] == 6 and not set(cal["arch_ids"]) & {a["arch_id"] for a in report["archs"]}
    assert "additive table" in capsys.readouterr().out
