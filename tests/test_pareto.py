"""Pareto merge: non-dominated, deterministic, deduplicated."""

from __future__ import annotations

import random

from hwnas.run import read_front, read_jsonl, write_front
from hwnas.search.pareto import pareto_front


def _c(i, acc, ms, shard="s"):
    return {"arch": {}, "arch_id": f"id{i}", "accuracy": acc, "predicted_latency_ms": ms * 1.01,
            "measured_latency_ms": ms, "shard": shard}


def test_front_keeps_only_non_dominated_fastest_first():
    cands = [_c(1, 0.90, 0.02), _c(2, 0.95, 0.04), _c(3, 0.93, 0.05), _c(4, 0.97, 0.08), _c(5, 0.96, 0.09)]
    front = pareto_front(cands)
    assert [c["arch_id"] for c in front] == ["id1", "id2", "id4"]


def test_front_is_order_independent_and_dedups_archs():
    cands = [_c(i, random.Random(i).random(), random.Random(i + 99).random()) for i in range(40)]
    cands.append({**cands[3], "accuracy": cands[3]["accuracy"] + 0.5, "shard": "other"})
    fronts = set()
    for seed in range(5):
        shuffled = cands[:]
        random.Random(seed).shuffle(shuffled)
        front = pareto_front(shuffled)
        fronts.add(tuple((c["arch_id"], c["shard"]) for c in front))
    assert len(fronts) == 1
    front = pareto_front(cands)
    assert len({c["arch_id"] for c in front}) == len(front)
    for a in front:
        for b in cands:
            assert not (b["accuracy"] > a["accuracy"] and b["measured_latency_ms"] < a["measured_latency_ms"])


def test_predicted_latency_is_used_when_not_measured():
    a = {**_c(1, 0.9, 0.0), "measured_latency_ms": None, "predicted_latency_ms": 0.03}
    b = _c(2, 0.95, 0.02)
    assert [c["arch_id"] for c in pareto_front([a, b])] == ["id2"]


def test_write_front_roundtrip(tmp_path):
    cands = [_c(1, 0.9, 0.02, "b"), _c(2, 0.95, 0.04, "a")]
    front = write_front(tmp_path, cands)
    assert [c["shard"] for c in read_jsonl(tmp_path / "candidates.jsonl")] == ["a", "b"]
    assert len(front) == 2 and read_front(tmp_path) == front
