"""Several latency targets in one search (``--target DEVICE_TABLE:BUDGET_MS``): exact derivation against brute
force, the infeasible-budget error, a real two-table search on seed-cnn/digits, and the CLI's spec error."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch
from _toy import TOY
from conftest_latency import assert_one_line_error, run_hwnas, synthetic_table
from test_derive_kbest import _logp, _probs

from hwnas.config import SearchConfig
from hwnas.errors import ConfigError, HwnasError
from hwnas.latency import LatencyModel
from hwnas.latency.store import resolve_table
from hwnas.latency.table import TableWarning, read_table, save_table
from hwnas.run import check_candidate
from hwnas.search import run_search
from hwnas.search.derive import BudgetError, _frontier, derive, derive_k
from hwnas.search.targets import parse_target
from hwnas.space import get_space

MADE_UP = "made-up-wide-1t"
MIRROR = {16: 64, 64: 16}  # channel widths swapped: wide convolutions cheap, narrow ones dear


def made_up_table(out: str | Path, space_name: str = "seed-cnn") -> Path:
    """A table for a MADE-UP device (not measured anywhere): each unit's cost is what amd-epyc-1t measured for
    the same unit with its channel widths C_i/C_o mirrored (16 <-> 64), so the archs that are fast here are
    slow there and the reverse (like an accelerator that wastes its lanes on narrow layers)."""
    real = read_table(resolve_table("amd-epyc-1t", space_name))
    space = get_space(space_name)
    entries = {u.key(v): real.entries[u.key({k: MIRROR.get(x, x) if k in ("C_i", "C_o") else x
                                             for k, x in v.items()})]
               for u in space.latency_units() for v in space.unit_entries(u)}
    device = {**real.device, "name": MADE_UP, "cpu_model": "made up by tests/test_multi_target.py: amd-epyc-1t "
              "with C_i/C_o mirrored 16<->64; not a real device"}
    return save_table(dataclasses.replace(real, device=device, entries=entries, calibration=None), out)


# ---- exact derivation with two targets -------------------------------------------------------------------------
def _pair(name: str, **kwargs) -> tuple[LatencyModel, LatencyModel]:
    space = get_space(name, **kwargs)
    return (LatencyModel(space, synthetic_table(space, seed=3)),
            LatencyModel(space, synthetic_table(space, seed=11, device="other-1t")))


PAIRS = {"seed-cnn": lambda: _pair("seed-cnn"), "toy": lambda: _pair(TOY),
         "mbconv-small": lambda: _pair("mbconv", depths=(1, 1, 1))}


@pytest.fixture(scope="module", params=sorted(PAIRS))
def pair(request):
    a, b = PAIRS[request.param]()
    return a, b, [(x, a.predict(x), b.predict(x)) for x in a.space.enumerate()]


def test_two_target_derivation_matches_brute_force(pair):
    a, b, table = pair
    space = a.space
    qa, qb = sorted(t for _, t, _ in table), sorted(t for _, _, t in table)
    for fa, fb in ((0.3, 0.3), (0.5, 0.2), (0.15, 0.6), (1.0, 0.4)):
        ba, bb = qa[int(fa * (len(qa) - 1))] * (1 + 1e-9), qb[int(fb * (len(qb) - 1))] * (1 + 1e-9)
        for seed in range(2):
            probs = _probs(space, seed)
            ok = sorted(((x, ta, _logp(space, probs, x)) for x, ta, tb in table if ta <= ba and tb <= bb),
                        key=lambda r: (-r[2], r[1], repr(sorted(r[0].items()))))
            if not ok:
                with pytest.raises(BudgetError, match="meets all 2 budgets at once"):
                    derive_k(a, probs, ba, 1, others=[(b, bb)])
                continue
            for k in (1, 3, 50):
                got = derive_k(a, probs, ba, k, others=[(b, bb)])
                want = ok[:k]
                assert [x for x, _, _ in got] == [x for x, _, _ in want], (fa, fb, k)
                assert [lp for _, _, lp in got] == pytest.approx([lp for _, _, lp in want], abs=1e-9)
                assert all(a.predict(x) <= ba and b.predict(x) <= bb for x, _, _ in got)
            assert derive(a, probs, ba, others=[(b, bb)]) == (ok[0][0], ok[0][1])


def test_one_budget_alone_would_break_the_other():
    a, b = _pair("seed-cnn")
    table = [(x, a.predict(x), b.predict(x)) for x in a.space.enumerate()]
    probs = _probs(a.space, 4)
    # budgets where the most probable arch under either budget alone misses the other
    for ba in sorted({t for _, t, _ in table})[5::7]:
        for bb in sorted({t for _, _, t in table})[5::7]:
            alone_a, _ = derive(a, probs, ba)
            alone_b, _ = derive(b, probs, bb)
            if b.predict(alone_a) > bb and a.predict(alone_b) > ba and any(
                    ta <= ba and tb <= bb for _, ta, tb in table):
                both, _ = derive(a, probs, ba, others=[(b, bb)])
                assert a.predict(both) <= ba and b.predict(both) <= bb
                return
    pytest.fail("no budget pair where each budget alone breaks the other")


def test_infeasible_budgets_name_the_fastest_per_target():
    a, b = _pair("seed-cnn")
    probs = _probs(a.space, 0)
    fa, fb = a.min_latency()[1], b.min_latency()[1]
    with pytest.raises(BudgetError) as err:
        derive_k(a, probs, fa * 0.5, 3, others=[(b, fb * 2)])
    msg = str(err.value)
    assert f"test-1t: fastest predicted {fa:.4f} ms" in msg and f"other-1t: fastest predicted {fb:.4f} ms" in msg
    assert msg.count("(unreachable)") == 1 and "--target DEVICE_TABLE:BUDGET_MS" in msg
    # each budget reachable alone, but no arch meets both at once
    table = [(a.predict(x), b.predict(x)) for x in a.space.enumerate()]
    ta_fast = min(table)  # the arch fastest on a, and its latency on b
    tb_fast = min(table, key=lambda r: r[1])
    ba, bb = ta_fast[0] * (1 + 1e-9), tb_fast[1] * (1 + 1e-9)
    assert not any(x <= ba and y <= bb for x, y in table)  # true of these synthetic tables
    with pytest.raises(BudgetError, match="meets all 2 budgets at once") as err:
        derive(a, probs, ba, others=[(b, bb)])
    assert "(unreachable)" not in str(err.value)
    assert derive(a, probs, ba)[1] <= ba and derive(b, probs, bb)[1] <= bb  # one at a time: fine


@pytest.mark.parametrize("targets", [2, 3])
def test_frontier_over_several_latencies_keeps_exactly_the_undominated(targets):
    g = torch.Generator().manual_seed(targets)
    pts = (torch.randint(0, 6, (300, targets + 1), generator=g) / 2).tolist()  # coarse: many ties
    states = [(tuple(p[:-1]), -p[-1], {"i": i}) for i, p in enumerate(pts)]
    limit = (2.0, 2.5, 2.0)[:targets]

    def dominates(o, s):
        return all(x <= y for x, y in zip(o[0], s[0], strict=True)) and o[1] >= s[1]

    for k in (1, 2, 5):
        kept = _frontier(states, limit, k)
        ids = {s[2]["i"] for s in kept}
        assert 0 < len(kept) < len(states)
        for s in states:
            inside = all(x <= m for x, m in zip(s[0], limit, strict=True))
            if not inside:
                assert s[2]["i"] not in ids
            elif s[2]["i"] not in ids:  # dropped: k kept states dominate it
                assert sum(1 for o in kept if dominates(o, s)) >= k
        for j, s in enumerate(kept):  # kept: fewer than k earlier kept states dominate it
            assert sum(1 for o in kept[:j] if dominates(o, s)) < k


# ---- config and CLI -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["amd-epyc-1t", "amd-epyc-1t:", ":0.05", "amd-epyc-1t:fast", "amd-epyc-1t:-1",
                                  "amd-epyc-1t:nan", {"table": "x.json"}, {"table": "x", "budget_ms": 1, "ms": 2}])
def test_bad_target_specs_are_refused(spec):
    with pytest.raises(ConfigError, match="must be DEVICE_TABLE:BUDGET_MS"):
        parse_target(spec)


def test_first_target_is_the_primary_and_must_agree():
    cfg = SearchConfig(latency_targets=["amd-epyc-1t:0.03", {"table": "x.json", "budget_ms": 0.05}])
    assert (cfg.latency_table, cfg.target_ms) == ("amd-epyc-1t", 0.03)
    assert cfg.latency_targets[1] == {"table": "x.json", "budget_ms": 0.05}
    with pytest.raises(ConfigError, match="disagrees with the first latency target"):
        SearchConfig(latency_targets=["amd-epyc-1t:0.03"], target_ms=0.04)
    with pytest.raises(ConfigError, match="weighs one latency"):
        SearchConfig(latency_targets=["a:1", "b:2"], hw_loss="mul")


def test_cli_bad_target_is_one_line_with_the_fix(tmp_path):
    proc = run_hwnas("search", "--target", "amd-epyc-1t=0.05", "--out", str(tmp_path / "r"), timeout=120)
    assert_one_line_error(proc, "amd-epyc-1t=0.05", "DEVICE_TABLE:BUDGET_MS", "--target amd-epyc-1t:0.05")
    with pytest.raises(HwnasError, match="hwnas profile --space seed-cnn --device no-such-device") as err:
        resolve_table("no-such-device", "seed-cnn")  # a device name with no table: how to measure one
    assert "\n" not in str(err.value)


# ---- a real search on two tables ----------------------------------------------------------------------------
@pytest.mark.slow
def test_two_target_search_meets_both_where_one_target_breaks_the_other(tmp_path):
    other = made_up_table(tmp_path / MADE_UP / "seed-cnn.json")
    budget = 0.025  # ms on each; 87% of the archs within one budget miss the other, 7 of 216 meet both
    base = dict(dataset="digits", data_limit=160, epochs=2, warmup_epochs=1, batch_size=32, threads=1, seed=0)
    runs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TableWarning)  # amd-epyc-1t's table may come from another EPYC's ISA
        for name, kw in {"cpu": dict(latency_table="amd-epyc-1t", target_ms=budget),
                         "made-up": dict(latency_table=str(other), target_ms=budget),
                         "both": dict(latency_targets=[f"amd-epyc-1t:{budget}", f"{other}:{budget}"])}.items():
            runs[name] = run_search(SearchConfig(**base, **kw), tmp_path / name, progress=False, measure=False)
        cpu = LatencyModel.load(resolve_table("amd-epyc-1t", "seed-cnn"), get_space("seed-cnn"))
        made = LatencyModel.load(other, get_space("seed-cnn"))
    on = {name: (cpu.predict(r.arch), made.predict(r.arch)) for name, r in runs.items()}
    assert on["cpu"][0] <= budget < on["cpu"][1]  # the CPU's search alone breaks the made-up device's budget
    assert on["made-up"][1] <= budget < on["made-up"][0]  # and the reverse
    assert on["both"][0] <= budget and on["both"][1] <= budget
    targets = runs["both"].extra["latency_targets"]  # recorded: device, table, budget, prediction of each
    assert [t["device"] for t in targets] == ["amd-epyc-1t", MADE_UP]
    assert [t["predicted_latency_ms"] for t in targets] == pytest.approx(list(on["both"]))
    assert all(t["budget_ms"] == budget for t in targets) and targets[1]["table"] == str(other)
    check_candidate({"arch": runs["both"].arch, "arch_id": runs["both"].arch_id, "latency_targets": targets}, "x")
    last = runs["both"].history[-1]
    assert {"expected_latency_ms_t1", "lambda_t1"} <= set(last) and len(last["latency_targets"]) == 2
