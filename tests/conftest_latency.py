"""Helpers shared by the latency tests (imported explicitly: ``from conftest_latency import ...``)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from hwnas.latency.protocol import Protocol
from hwnas.latency.table import Entry, LatencyTable
from hwnas.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
# Real onnxruntime sessions, but as few calls as the protocol allows: the tests check outcomes, not timings.
TINY = Protocol(runs=3, trials=2, warmup_runs=1, warmup_s=0.0, max_remeasure=0)
TINY_FLAGS = ("--runs", "3", "--trials", "2", "--warmup-runs", "1", "--warmup-s", "0")


def synthetic_table(space: SearchSpace, seed: int = 0, calibrated: bool = True, device: str = "test-1t",
                    complete: bool = True) -> LatencyTable:
    """A table with random (but valid) entries for ``space``, provenance of this host."""
    rng = random.Random(seed)
    table = LatencyTable.new(space, device, Protocol())
    table.overhead_ms = 0.005
    for u in space.latency_units():
        for v in space.unit_entries(u):
            table.entries[u.key(v)] = Entry(0.005 + rng.uniform(0.001, 0.1), rng.uniform(0, 0.02))
    if not complete:
        table.entries.pop(sorted(table.entries)[3])
    if calibrated:
        table.calibration = {"c0": 0.004 + rng.uniform(0, 0.004), "seed": 0, "arch_ids": [],
                             "scales": {u.name: rng.uniform(0.8, 1.2) for u in space.latency_units() if u.labels}}
    return table


def run_hwnas(*args: str, cwd: Path | None = None, env: dict | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m hwnas.cli ARGS`` in a subprocess (one BLAS thread)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "hwnas.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=full_env, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Non-zero exit, exactly one non-empty stderr line, no traceback, containing every fragment."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [s for s in proc.stderr.splitlines() if s.strip()]
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]
