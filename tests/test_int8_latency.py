"""int8 as a search target: int8 latency tables (profile, calibrate, validate, lookup), an int8-budget search
and its export checked against the int8 table. Real torch exports, real onnxruntime quantisation and
sessions, tiny run counts (outcomes are asserted, not timings)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import onnx
import pytest
from conftest import run_cli
from conftest_latency import TINY, TINY_FLAGS, run_hwnas, synthetic_table

from hwnas.config import SearchConfig
from hwnas.errors import ConfigError
from hwnas.export import export
from hwnas.latency import (
    LatencyModel,
    TableError,
    calibrate_table,
    load_table,
    profile_space,
    read_table,
    save_table,
)
from hwnas.latency import quantize as quantize_mod
from hwnas.latency.measure import to_model
from hwnas.latency.protocol import Protocol
from hwnas.latency.store import assess_table, default_table_path, find_table, table_paths
from hwnas.search import run_search
from hwnas.search.hardware import table_path
from hwnas.space import get_space

SPACE = "seed-cnn"
DEVICE = "int8-test-1t"
QDQ = {"QuantizeLinear", "DequantizeLinear"}
# The exported int8 model is timed end to end; on a shared 2-core machine onnxruntime medians move by a few
# percent between runs, so (as tests/test_hardware.py does for fp32 budgets) 15% is allowed over the budget.
NOISE = 0.15
EXPORT_PROTOCOL = Protocol(runs=50, trials=3, warmup_runs=5, warmup_s=0.02, aggregate="min")


def _tables(root: Path) -> tuple[Path, Path]:
    """Synthetic fp32 and int8 tables of seed-cnn with this host's provenance under ``root/<device>/``."""
    space = get_space(SPACE)
    fp32 = save_table(synthetic_table(space, device=DEVICE), default_table_path(SPACE, DEVICE, root))
    table = synthetic_table(space, seed=1, device=DEVICE)
    table.precision = "int8"
    return fp32, save_table(table, default_table_path(SPACE, DEVICE, root, precision="int8"))


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> tuple[Path, Path]:
    """``hwnas profile --precision int8`` (CLI, default path under $HWNAS_LATENCY_TABLES), calibrated on int8
    networks; returns (table root, int8 table). Beside it a synthetic fp32 table of the same device."""
    root = tmp_path_factory.mktemp("tables")
    r = run_hwnas("profile", "--space", SPACE, "--precision", "int8", "--device", DEVICE, *TINY_FLAGS, "--batch",
                  "200", "--no-progress", env={"HWNAS_LATENCY_TABLES": str(root)})
    assert r.returncode == 0, r.stderr
    path = root / DEVICE / "seed-cnn.int8.json"  # beside <space>.json, never over it
    assert path.is_file() and str(path) in r.stdout
    calls: list[int] = []
    real = quantize_mod.quantize_bytes

    def counting(*args, **kw):  # the real quantiser, counted: calibration must time int8 networks
        calls.append(1)
        return real(*args, **kw)

    quantize_mod.quantize_bytes = counting
    try:
        calibrate_table(path, samples=8, seed=0, protocol=TINY, progress=False)
    finally:
        quantize_mod.quantize_bytes = real
    assert len(calls) == 8, "calibration of an int8 table must quantise every network it times"
    save_table(synthetic_table(get_space(SPACE), device=DEVICE), default_table_path(SPACE, DEVICE, root))
    return root, path


@pytest.mark.slow
def test_int8_table_records_precision_and_every_unit(profiled):
    space = get_space(SPACE)
    _, int8_path = profiled
    raw = json.loads(int8_path.read_text())
    assert raw["precision"] == "int8" and raw["quantization"]["format"] == "QDQ"
    assert "random tensors" in raw["quantization"]["calibration"]
    table = load_table(int8_path, space, precision="int8")
    assert table.missing(space) == [] and all(e.median_ms > 0 for e in table.entries.values())
    assert table.calibration is not None and table.calibration["n_samples"] == 8
    # a table written before int8 tables existed (no "precision" key) reads as fp32
    old = {k: v for k, v in raw.items() if k not in ("precision", "quantization")}
    legacy = int8_path.with_name("legacy.json")
    legacy.write_text(json.dumps(old))
    assert read_table(legacy).precision == "fp32"


def test_int8_units_are_quantised_like_export():
    space = get_space(SPACE)
    for unit in space.latency_units():
        values = next(iter(space.unit_entries(unit)))
        module, shape = space.build_unit(unit, values)
        q = onnx.load_from_string(to_model(unit.key(values), module, shape, "int8").onnx)
        ops = {n.op_type for n in q.graph.node}
        assert QDQ <= ops, (unit.name, ops)
        weights = {i.name: i.data_type for i in q.graph.initializer}
        assert onnx.TensorProto.INT8 in weights.values(), unit.name  # int8 weights per channel
        fp = onnx.load_from_string(to_model(unit.key(values), module, shape).onnx)
        assert not QDQ & {n.op_type for n in fp.graph.node}


def test_lookup_keeps_precisions_apart(tmp_path):
    space = get_space(SPACE)
    root = tmp_path / "tables"
    fp32_path, int8_path = _tables(root)
    assert int8_path.name == "seed-cnn.int8.json" and fp32_path.name == "seed-cnn.json"
    assert table_paths(SPACE, roots=[root]) == [fp32_path]
    assert table_paths(SPACE, roots=[root], precision="int8") == [int8_path]
    mislabelled = root / "other-1t" / "seed-cnn.json"  # an int8 table under the fp32 name is still int8
    mislabelled.parent.mkdir(exist_ok=True)
    shutil.copy(int8_path, mislabelled)
    try:
        assert assess_table(mislabelled, space).status == "other-precision"
    finally:
        shutil.rmtree(mislabelled.parent)
    fp32_path.unlink()  # only the int8 table is left: an fp32 lookup finds nothing (and probes nothing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_table(SPACE, roots=[root]) is None
    _tables(root)
    with pytest.raises(TableError, match="times int8 models, not fp32.*--precision int8"):
        LatencyModel.load(int8_path, space, precision="fp32")
    with pytest.raises(TableError, match="times fp32 models, not int8"):
        load_table(fp32_path, space, precision="int8")
    # a search never takes a table of the other precision, and a missing int8 table names the command
    with pytest.raises(TableError, match="times int8 models, not fp32"):
        table_path(SearchConfig(target_ms=1.0, latency_table=str(int8_path)), space)
    assert table_path(SearchConfig(target_ms=1.0, precision="int8", latency_table=str(int8_path)),
                      space) == str(int8_path)
    mb = get_space("mbconv")
    with pytest.raises(ConfigError, match=r"hwnas profile --space mbconv .*--precision int8"):
        table_path(SearchConfig(space="mbconv", target_ms=1.0, precision="int8"), mb)


@pytest.mark.slow
def test_latency_validate_reports_int8_table(profiled, tmp_path):
    int8_path = profiled[1]
    out = tmp_path / "val.json"
    r = run_cli("latency", "validate", "--table", str(int8_path), "--samples", "6", *TINY_FLAGS, "--no-progress",
                "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "seed-cnn (int8)" in r.stdout and "<=5%" in r.stdout and "<=10%" in r.stdout
    report = json.loads(out.read_text())
    assert report["precision"] == "int8" and report["n"] == 6
    assert 0 <= report["within_5pct"] <= report["within_10pct"] <= 1


def test_profile_resumes_only_the_same_precision(tmp_path):
    space = get_space(SPACE)
    out = tmp_path / "seed-cnn.int8.json"
    table = profile_space(space, out, "d-1t", TINY, limit=2, progress=False, precision="int8")
    assert table.precision == "int8" and len(table.entries) == 2
    with pytest.raises(TableError, match="holds int8 latencies, this run measures fp32 models; pass --precision int8"):
        profile_space(space, out, "d-1t", TINY, progress=False)
    assert len(read_table(out).entries) == 2  # nothing measured into it


@pytest.mark.slow
def test_int8_budget_search_exports_an_int8_model_within_budget(profiled, tmp_path):
    space = get_space(SPACE)
    root, int8_path = profiled
    model = LatencyModel.load(int8_path, space, precision="int8")
    lo, hi = model.min_latency()[1], model.max_latency()[1]
    budget = lo + 0.4 * (hi - lo)  # excludes the slower part of the space: the budget binds
    cfg = SearchConfig(relaxation="single-path", epochs=2, warmup_epochs=1, data_limit=200, threads=1,
                       precision="int8", latency_table=str(int8_path), target_ms=budget)
    run = tmp_path / "run"
    res = run_search(cfg, run, progress=False)
    assert res.extra["latency_precision"] == "int8" and res.extra["predicted_latency_ms"] <= budget
    assert "precision: int8" in (run / "config.yaml").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = export(run, tmp_path / "exp", int8=True, protocol=EXPORT_PROTOCOL,
                   latency_table=str(default_table_path(SPACE, DEVICE, root)))
    q = m["int8"]
    assert q["int8_table_device"] == DEVICE and q["budget_ms"] == pytest.approx(budget)
    assert q["predicted_latency_ms"] == pytest.approx(model.predict(res.arch)) and q["predicted_latency_ms"] <= budget
    assert q["measured_over_predicted"] == pytest.approx(q["measured_latency_ms"] / q["predicted_latency_ms"])
    assert q["measured_latency_ms"] <= budget * (1 + NOISE), (q["measured_latency_ms"], budget)
    assert m["artefacts"]["model.int8.onnx"]["latency"]["predicted_ms"] == q["predicted_latency_ms"]
    saved = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert saved["int8"]["predicted_latency_ms"] == q["predicted_latency_ms"]
    assert "Searched for int8" in (tmp_path / "exp" / "README.md").read_text()
