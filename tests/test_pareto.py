"""Pareto merge: non-dominated, deterministic, deduplicated."""

from __future__ import annotations

import math
import random

import pytest

from hwnas.errors import HwnasError
from hwnas.run import read_front, read_jsonl, write_front
from hwnas.search.pareto import dominates, pareto_front
from hwnas.search.stats import mean_ci, t_critical


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


# ---- accuracy intervals (hwnas finalize: mean of seeds with a 95% t-interval) ------------------------

def _ci(i, acc, lo, hi, ms, shard="s"):
    return {**_c(i, acc, ms, shard), "accuracy_ci": [lo, hi]}


def _ids(front):
    return [c["arch_id"] for c in front]


def test_overlapping_intervals_keep_both():
    fast, slow = _ci(1, 0.95, 0.93, 0.97, 0.02), _ci(2, 0.94, 0.92, 0.96, 0.05)
    assert _ids(pareto_front([slow, fast])) == ["id1", "id2"]  # without intervals id2 would be dropped
    assert _ids(pareto_front([{**slow, "accuracy_ci": None}, {**fast, "accuracy_ci": None}])) == ["id1"]


def test_faster_arch_better_beyond_the_intervals_drops_the_slower():
    fast, slow = _ci(1, 0.97, 0.965, 0.975, 0.02), _ci(2, 0.95, 0.94, 0.96, 0.05)
    assert _ids(pareto_front([slow, fast])) == ["id1"]
    touching = {**fast, "accuracy_ci": [0.96, 0.975]}  # lo == other's hi: not beyond, both stay
    assert _ids(pareto_front([slow, touching])) == ["id1", "id2"]


def test_slower_arch_is_never_dropped_by_a_slower_better_one():
    fast, slow = _ci(1, 0.90, 0.89, 0.91, 0.02), _ci(2, 0.99, 0.98, 1.0, 0.05)
    assert _ids(pareto_front([slow, fast])) == ["id1", "id2"]


def test_equal_latency_with_intervals():
    a, b = _ci(1, 0.95, 0.94, 0.96, 0.03), _ci(2, 0.97, 0.965, 0.975, 0.03)
    assert _ids(pareto_front([a, b])) == ["id2"]  # same latency, b beyond a's interval
    c = _ci(3, 0.955, 0.93, 0.98, 0.03)  # overlaps both: kept, and keeps nobody out
    assert _ids(pareto_front([a, b, c])) == ["id2", "id3"]
    same = [_ci(4, 0.95, 0.94, 0.96, 0.03), _ci(5, 0.95, 0.94, 0.96, 0.03)]  # exact tie: both stay, id order
    assert _ids(pareto_front(same[::-1])) == ["id4", "id5"]


def test_front_with_intervals_need_not_rise_and_is_order_independent():
    cands = [_ci(1, 0.96, 0.94, 0.98, 0.02), _ci(2, 0.95, 0.93, 0.97, 0.03), _ci(3, 0.99, 0.985, 0.995, 0.04),
             _ci(4, 0.90, 0.89, 0.91, 0.05)]
    fronts = set()
    for seed in range(6):
        shuffled = cands[:]
        random.Random(seed).shuffle(shuffled)
        fronts.add(tuple(_ids(pareto_front(shuffled))))
    assert fronts == {("id1", "id2", "id3")}  # id2 is less accurate than id1 but not beyond the intervals


def test_mixed_interval_and_point():
    point = _c(1, 0.97, 0.02)  # no interval: the point [0.97, 0.97]
    inside, below = _ci(2, 0.965, 0.96, 0.975, 0.05), _ci(3, 0.95, 0.94, 0.96, 0.06)
    assert _ids(pareto_front([inside, point, below])) == ["id1", "id2"]
    slow_point = _c(4, 0.99, 0.09)
    assert _ids(pareto_front([inside, slow_point])) == ["id2", "id4"]
    fast_point = _c(5, 0.99, 0.01)  # 0.99 > 0.975: beyond the interval
    assert _ids(pareto_front([inside, fast_point])) == ["id5"]


def test_duplicates_keep_their_best_with_intervals():
    worse, better = _ci(1, 0.90, 0.85, 0.95, 0.02, "a"), _ci(1, 0.93, 0.91, 0.95, 0.02, "b")
    front = pareto_front([worse, better, _ci(2, 0.96, 0.955, 0.965, 0.03)])
    assert [(c["arch_id"], c["shard"]) for c in front] == [("id1", "b"), ("id2", "s")]


def test_malformed_interval_is_an_error():
    with pytest.raises(HwnasError, match="accuracy_ci"):
        pareto_front([_ci(1, 0.9, 0.95, 0.85, 0.02), _c(2, 0.8, 0.01)])
    with pytest.raises(HwnasError, match="accuracy_ci"):
        pareto_front([{**_c(1, 0.9, 0.02), "accuracy_ci": [0.9]}])


def test_no_intervals_matches_the_pairwise_rule():
    """Without intervals the sweep equals 'no other is as fast and as accurate and comes first'."""
    rng = random.Random(7)
    cands = [_c(i, round(rng.random(), 1), round(rng.random(), 1)) for i in range(60)]
    front = pareto_front(cands)
    kept = [a for a in cands if not any(b is not a and dominates(b, a) for b in cands)]
    assert _ids(front) == _ids(sorted(kept, key=lambda c: (c["measured_latency_ms"], -c["accuracy"], c["arch_id"])))


# ---- mean_ci -----------------------------------------------------------------------------------------

def test_mean_ci_known_values():
    mean, lo, hi = mean_ci([0.90, 0.92, 0.94])
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert mean == pytest.approx(0.92) and lo == pytest.approx(0.92 - half, abs=1e-6)
    assert hi == pytest.approx(0.92 + half, abs=1e-6)
    mean, lo, hi = mean_ci([1.0, 3.0], level=0.90)  # df 1, t 6.3138, s = sqrt(2)
    assert (mean, hi - mean) == pytest.approx((2.0, 6.313752 * math.sqrt(2) / math.sqrt(2)), abs=1e-5)
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("df,t", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                                  (29, 2.0452), (100, 1.9840), (999, 1.9623), (1001, 1.9623), (10**6, 1.9600)])
def test_t_critical_table(df, t):
    assert t_critical(df) == pytest.approx(t, abs=1e-4)


def test_t_critical_other_levels():
    assert t_critical(1, 0.99) == pytest.approx(63.6567, abs=1e-3)
    assert t_critical(5, 0.90) == pytest.approx(2.0150, abs=1e-4)
    assert t_critical(10, 0.99) == pytest.approx(3.1693, abs=1e-4)


def test_mean_ci_one_value_and_errors():
    assert mean_ci([0.87]) == (0.87, None, None)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    with pytest.raises(ValueError, match=r"nan at position 1.*inf at position 2"):
        mean_ci([0.9, float("nan"), float("inf")])
    with pytest.raises(ValueError, match="level"):
        mean_ci([0.9, 0.91], level=95)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_critical(0)
