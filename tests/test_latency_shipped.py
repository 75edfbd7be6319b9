"""Contract: every space shipped with hwnas has a complete, calibrated latency table in ``latency_tables/``."""

from __future__ import annotations

import warnings

import pytest
from conftest_latency import ROOT

from hwnas.latency import LatencyModel, TableWarning, find_table, load_table
from hwnas.latency.fingerprint import mismatches
from hwnas.latency.protocol import cpu_model, isa_flags
from hwnas.latency.table import space_hash, unit_keys
from hwnas.space import SPACES, get_space

# Not test-only spaces, and not proxyless: a phone space whose table is imported (`hwnas latency import
# --format proxylessnas`, tests/test_proxyless.py); profiling its 145 units at 224x224 here is not shipped.
PHONE_ONLY = {"proxyless"}
SHIPPED = [n for n in SPACES.names() if SPACES.get(n).__module__.startswith("hwnas.") and n not in PHONE_ONLY]
TABLES = ROOT / "latency_tables"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_has_a_complete_calibrated_table(name):
    space = get_space(name)
    paths = sorted(TABLES.glob(f"*/{name}.json"))
    assert paths, f"no table for space {name!r} under {TABLES}; run `hwnas profile --space {name}`"
    for path in paths:
        table = load_table(path, space, check_host=False)  # raises on a missing unit or another space hash
        assert set(unit_keys(space)) <= set(table.entries) and table.space_hash == space_hash(space)
        assert table.calibration is not None, f"{path} is not calibrated; run `hwnas latency calibrate`"
        assert table.device["name"] == path.parent.name
        assert table.protocol["threads"] == 1 and table.protocol["graph_optimization_level"] == "ORT_ENABLE_ALL"
        model = LatencyModel(space, table)
        arch, fastest = model.min_latency()
        assert 0 < fastest <= model.max_latency()[1]


@pytest.mark.timing
@pytest.mark.parametrize("name", SHIPPED)
def test_find_table_returns_a_shipped_table_on_a_matching_machine(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TableWarning)  # tables of other devices are skipped with a warning
        # 20%, not find_table's 10%: this checks that a shipped table fits its machine kind; the shared VMs
        # drift by 5-12% between hours, which the 10% probe of a session then catches (tests/conftest.py)
        found = find_table(name, roots=[TABLES], tolerance=0.2)
    matching = [p for p in TABLES.glob(f"*/{name}.json") if not mismatches(load_table(p, check_host=False))]
    if not matching:
        assert found is None
        pytest.skip(f"no shipped table of {name} has this machine's fingerprint ({cpu_model()}, "
                    f"{len(isa_flags())} ISA flags)")
    assert found in matching, f"{matching[0]} has this machine's fingerprint but failed the probe (see warnings)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert LatencyModel.load(found).predict(get_space(name).sample(__import__("random").Random(0))) > 0
