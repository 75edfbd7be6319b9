"""Latency tables: round trip, provenance, and every way a table can be wrong (clear errors, nothing written)."""

from __future__ import annotations

import json
import re
import warnings

import pytest
from conftest_latency import synthetic_table

from hwnas.latency import (
    LatencyModel,
    TableError,
    TableWarning,
    find_table,
    load_table,
    read_table,
    save_table,
    space_hash,
    store,
)
from hwnas.latency.fingerprint import ProbeResult
from hwnas.latency.protocol import cpu_model, isa_flags
from hwnas.latency.store import default_table_path, device_slug
from hwnas.space import get_space


@pytest.fixture()
def seed_space():
    return get_space("seed-cnn")


@pytest.fixture()
def table_file(tmp_path, seed_space):
    path = tmp_path / "tables" / "test-1t" / "seed-cnn.json"
    save_table(synthetic_table(seed_space), path)
    return path


def test_round_trip_keeps_entries_provenance_and_calibration(table_file, seed_space):
    original = synthetic_table(seed_space)
    loaded = load_table(table_file, seed_space)
    assert loaded.entries == original.entries
    assert loaded.calibration == original.calibration
    assert loaded.overhead_ms == original.overhead_ms
    for field in ("name", "cpu_model", "isa", "onnxruntime", "provider", "threads", "opt_level"):
        assert field in loaded.device
    for field in ("runs", "trials", "threads", "graph_optimization_level", "warmup_runs", "aggregate"):
        assert field in loaded.protocol
    obj = json.loads(table_file.read_text())
    assert obj["space"] == {"name": "seed-cnn", "hash": space_hash(seed_space), "units": 171}
    assert obj["hwnas_version"] and obj["created"] and obj["schema"] == "hwnas-latency-table/1"
    assert not list(table_file.parent.glob("*.tmp")), "atomic write left a temp file"


def test_space_hash_changes_with_the_space():
    assert space_hash(get_space("mbconv")) != space_hash(get_space("mbconv", widths=(16, 24, 40)))
    assert space_hash(get_space("mbconv")) == space_hash(get_space("mbconv"))


@pytest.mark.parametrize("cut", [0, 10, 500, -3])
def test_truncated_or_corrupted_table_is_a_clear_error(table_file, cut):
    text = table_file.read_text()
    table_file.write_text(text[:cut] if cut >= 0 else text[:cut] + "}}x")
    before = table_file.read_bytes()
    with pytest.raises(TableError, match="corrupted or truncated"):
        load_table(table_file)
    assert table_file.read_bytes() == before


def test_wrong_schema_and_malformed_entry(table_file):
    obj = json.loads(table_file.read_text())
    table_file.write_text(json.dumps({**obj, "schema": "something-else"}))
    with pytest.raises(TableError, match="not an hwnas latency table"):
        read_table(table_file)
    key = sorted(obj["entries"])[0]
    obj["entries"][key] = {"median_ms": "fast"}
    table_file.write_text(json.dumps(obj))
    with pytest.raises(TableError, match="malformed entry") as err:
        read_table(table_file)
    assert key in str(err.value)


def test_table_of_another_space_or_version(table_file, tmp_path):
    with pytest.raises(TableError, match="is for space 'seed-cnn', not 'mbconv'"):
        load_table(table_file, get_space("mbconv"))
    variant = get_space("mbconv", widths=(16, 24, 40))
    path = tmp_path / "variant.json"
    save_table(synthetic_table(variant), path)
    with pytest.raises(TableError, match="another version of space 'mbconv'"):
        load_table(path, get_space("mbconv"))


def test_missing_unit_names_the_key_and_the_command(tmp_path, seed_space):
    table = synthetic_table(seed_space, complete=False)
    missing = sorted(set(synthetic_table(seed_space).entries) - set(table.entries))[0]
    path = tmp_path / "partial.json"
    save_table(table, path)
    before = path.read_bytes()
    with pytest.raises(TableError) as err:
        LatencyModel.load(path)
    msg = str(err.value)
    assert repr(missing) in msg
    assert f"hwnas profile --space seed-cnn --device test-1t --out {path}" in msg
    assert path.read_bytes() == before
    assert load_table(path, complete=False).missing(seed_space) == [missing]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TableError, match="does not exist"):
        load_table(tmp_path / "nope.json")


@pytest.mark.parametrize("change, fragment", [
    (lambda t: t.protocol.update(threads=4), "measured with 4 thread(s)"),
    (lambda t: t.device.update(onnxruntime="0.0.1"), "onnxruntime 0.0.1"),
    (lambda t: t.device.update(isa=["neon"]), "ISA ['neon']"),
])
def test_table_from_other_conditions_warns(tmp_path, seed_space, change, fragment):
    table = synthetic_table(seed_space)
    change(table)
    path = tmp_path / "t.json"
    save_table(table, path)
    with pytest.warns(TableWarning, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_table(path)


def test_matching_table_does_not_warn(table_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TableWarning)
        load_table(table_file)


def test_find_table_matches_cpu_isa_and_threads(tmp_path, seed_space, monkeypatch):
    # the fingerprint part of the matching; the probe (tests/test_latency_match.py) is faked as passing here,
    # since a synthetic table's numbers are random
    passed = ProbeResult(True, 0.1, (), "now", 0.0)
    monkeypatch.setattr(store, "probe", lambda *a, **k: passed)
    root = tmp_path / "latency_tables"
    assert find_table("seed-cnn", roots=[root]) is None
    other = synthetic_table(seed_space, device="other-1t")
    other.device["cpu_model"] = "Imaginary CPU 9000"
    save_table(other, root / "other-1t" / "seed-cnn.json")
    with pytest.warns(TableWarning, match="other-1t/seed-cnn.json: not this machine's: measured on CPU 'Imaginary"):
        assert find_table("seed-cnn", roots=[root]) is None
    here = default_table_path("seed-cnn", root=root)
    save_table(synthetic_table(seed_space, device=device_slug()), here)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TableWarning)  # the preferred folder comes first: nothing skipped
        assert find_table("seed-cnn", roots=[root]) == here
    with pytest.warns(TableWarning, match=r"measured with 1 thread\(s\), used with 2"):
        assert find_table("seed-cnn", threads=2, roots=[root]) is None
    assert find_table("mbconv", roots=[root]) is None
    table = read_table(here)
    assert table.device["cpu_model"] == cpu_model() and table.device["isa"] == isa_flags()


def test_device_slug_is_a_clean_name():
    assert device_slug(1, "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz") == "intel-core-i7-8700-3-20ghz-1t"
    assert device_slug(4, "AMD EPYC") == "amd-epyc-4t"
    assert device_slug(1, "???") == "cpu-1t"


def test_model_from_an_incomplete_table_names_the_missing_unit(seed_space):
    table = synthetic_table(seed_space, complete=False)
    with pytest.raises(TableError, match=re.escape("has no entry for unit 'conv1|")):
        LatencyModel(seed_space, table)
