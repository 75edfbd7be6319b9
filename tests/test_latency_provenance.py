"""Latency provenance: a number is recorded as measured only on the table's own device.

A table of another device (the shipped table copied under another device name and CPU model) gives
``latency_source: "predicted"`` and no ``measured_latency_ms`` in arch.json, candidates.jsonl and
pareto.json; this host's table gives ``"measured"`` with a ``measurement`` record, taken after the shards
finished (shards never time their arch), and a resumed sweep does not measure again.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from conftest import budget_ms, host_table

from hwnas.config import SearchConfig, SweepConfig
from hwnas.search import run_search
from hwnas.search.sweep import run_sweep

SHIPPED = host_table("seed-cnn")  # this machine's table (of its machine kind, or profiled by conftest)
DEVICE = json.loads(SHIPPED.read_text())["device"]["name"]
BUDGET = budget_ms(0.4)  # 40% of the way from the fastest to the slowest arch on this machine
SHARD = f"t{BUDGET:g}-s0"
TINY = dict(space="seed-cnn", dataset="digits", data_limit=200, epochs=2, warmup_epochs=1, fine_tune_epochs=0,
            threads=1, target_ms=BUDGET)


@pytest.fixture(scope="module")
def foreign_table(tmp_path_factory) -> str:
    obj = json.loads(SHIPPED.read_text())
    obj["device"] = {**obj["device"], "name": "phone-x-1t", "cpu_model": "Phone X big core"}
    path = tmp_path_factory.mktemp("tables") / "phone-x-1t" / "seed-cnn.json"
    path.parent.mkdir()
    path.write_text(json.dumps(obj))
    return str(path)


def _records(run: Path) -> list[dict]:
    """Every latency-bearing record of a sweep: each shard's arch.json and candidate.json, the jsonl, the front."""
    out = [json.loads(p.read_text()) for p in sorted(run.glob("shards/*/arch.json"))]
    out += [json.loads(p.read_text()) for p in sorted(run.glob("shards/*/candidate.json"))]
    out += [json.loads(s) for s in (run / "candidates.jsonl").read_text().splitlines()]
    out += json.loads((run / "pareto.json").read_text())
    return out


def _sweep(table: str, run: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_sweep(SearchConfig(**TINY, latency_table=table), SweepConfig(targets=[BUDGET], seeds=[0]), run,
                         progress=True)


def test_a_foreign_device_table_records_predictions_only(tmp_path, foreign_table, capsys):
    _sweep(foreign_table, tmp_path / "sweep")
    assert "predicted only" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = run_search(SearchConfig(**TINY, latency_table=foreign_table), tmp_path / "single", progress=False)
    records = [*_records(tmp_path / "sweep"), json.loads((tmp_path / "single" / "arch.json").read_text())]
    assert len(records) == 5
    for r in records:
        assert r["measured_latency_ms"] is None and "measurement" not in r, r
        assert r["latency_source"] == "predicted" and r["latency_device"] == "phone-x-1t"
        assert r["predicted_latency_ms"] <= BUDGET
    assert single.extra["latency_source"] == "predicted"


def test_this_hosts_table_is_measured_after_training_and_not_again_on_resume(tmp_path, capsys):
    run = tmp_path / "sweep"
    first = _sweep(str(SHIPPED), run)
    out = capsys.readouterr().out
    assert f"measured 1/1: {SHARD}" in out and out.index("shard 1/1") < out.index("measured 1/1")
    history = json.loads((run / "shards" / SHARD / "history.jsonl").read_text().splitlines()[-1])
    records = _records(run)
    assert len(records) == 4
    for r in records:
        m = r["measurement"]
        assert r["latency_source"] == "measured" and r["latency_device"] == DEVICE
        assert r["measured_latency_ms"] == m["median_ms"] > 0 and isinstance(m["noisy"], bool)
        assert m["attempts"] >= 1 and m["probe_ratio"] > 0 and m["host"]["cores"] >= 1
        assert r["predicted_latency_ms"] == pytest.approx(history["predicted_latency_ms"])
    again = _sweep(str(SHIPPED), run)
    assert "measured" not in capsys.readouterr().out.replace("measured_latency", "")
    assert again.candidates[0]["measurement"] == first.candidates[0]["measurement"], "not measured again"


def test_a_single_search_measures_on_this_host(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_search(SearchConfig(**TINY, latency_table=str(SHIPPED)), tmp_path / "s", progress=False)
    arch = json.loads((tmp_path / "s" / "arch.json").read_text())
    assert arch["latency_source"] == res.extra["latency_source"] == "measured"
    assert arch["measured_latency_ms"] == arch["measurement"]["median_ms"] > 0


@pytest.mark.ray
def test_a_ray_sweep_measures_on_the_driver_after_the_shards(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    from hwnas.config import RayConfig
    from hwnas.distributed.driver import run_on_ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
    try:
        res = run_on_ray(SearchConfig(**TINY, latency_table=str(SHIPPED)), SweepConfig(targets=[BUDGET], seeds=[0]),
                         RayConfig(), tmp_path / "run", progress=True)
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert out.index(f"shard {SHARD} done in") < out.index(f"measured 1/1: {SHARD}")
    (cand,) = res.candidates
    assert cand["resources"]["placement"] == "ray-actor"
    for r in _records(tmp_path / "run"):
        assert r["latency_source"] == "measured" and r["measured_latency_ms"] == r["measurement"]["median_ms"]
