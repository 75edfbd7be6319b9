"""The run folder's one owner (hwnas.run): one writer, reuse only to resume the same run, typed records."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from hwnas.config import RayConfig, SearchConfig, SweepConfig
from hwnas.errors import HwnasError
from hwnas.latency.devicekit import export_kit
from hwnas.run import LOCK, RunFolder, read_front, sweep_record
from hwnas.space import get_space

TINY = ["--dataset", "digits", "--data-limit", "96", "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "32",
        "--no-progress"]


def _sums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK}


def _error(r: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = [s for s in r.stderr.splitlines() if s.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("hwnas: error:"), r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def _sweep_folder(path: Path, **changes) -> Path:
    """A sweep's folder as ``hwnas search --targets`` starts it (its run record and resolved config)."""
    cfg = SearchConfig(epochs=2, warmup_epochs=1, **changes)
    folder = RunFolder(path)
    with folder.writer("test"):
        folder.prepare("sweep", sweep_record(cfg, SweepConfig([0.05, 0.08], [0]), RayConfig(enabled=False)))
    return path


def _search_folder(path: Path, **changes) -> Path:
    folder = RunFolder(path)
    with folder.writer("test"):
        folder.prepare("search", SearchConfig(epochs=2, warmup_epochs=1, **changes).to_dict())
    return path


def test_a_second_writer_is_refused_while_the_first_finishes(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "hwnas.cli", "search", *TINY, "--epochs", "4", "--data-limit", "300", "--out", str(run)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run / LOCK).is_file() and (run / LOCK).read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = run_cli("search", *TINY, "--epochs", "4", "--data-limit", "300", "--out", str(run))
        if first.poll() is None:  # the second started while the first still held the folder
            _error(second, "is being written by `hwnas search`", f"pid {first.pid}", "another --out")
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3], "one writer: no interleaved or duplicated epochs"


def test_lock_is_released_when_the_holder_dies(tmp_path):
    code = ("import sys, time; from hwnas.run import RunFolder\n"
            "with RunFolder(sys.argv[1]).writer('holder'):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(HwnasError, match=f"`holder` \\(pid {holder.pid}"):
        with RunFolder(tmp_path).writer("second"):
            pass
    holder.kill()
    holder.wait()
    with RunFolder(tmp_path).writer("second"):  # the kernel dropped the dead holder's lock
        pass


def test_single_search_into_a_sweep_is_refused_and_touches_nothing(tmp_path):
    run = _sweep_folder(tmp_path / "sweep")
    before = _sums(run)
    _error(run_cli("search", *TINY, "--out", str(run)), "holds a sweep, not a search", "--fresh")
    assert _sums(run) == before


def test_sweep_into_a_single_search_is_refused(tmp_path):
    run = _search_folder(tmp_path / "one")
    before = _sums(run)
    _error(run_cli("search", *TINY, "--targets", "0.05", "--no-ray", "--out", str(run)),
           "holds a search, not a sweep", "--fresh")
    assert _sums(run) == before


def test_sweep_with_other_settings_names_the_difference(tmp_path):
    run = _sweep_folder(tmp_path / "sweep")
    before = _sums(run)
    msg = _error(run_cli("search", "--epochs", "2", "--warmup-epochs", "1", "--targets", "0.05,0.08", "--lr", "0.1",
                         "--no-ray", "--no-progress", "--out", str(run)), "other settings", "--fresh")
    assert "lr: 0.05 -> 0.1" in msg
    assert _sums(run) == before


def test_search_with_other_settings_refused_and_fresh_starts_over(tmp_path):
    run = _search_folder(tmp_path / "one", lr=0.2)
    (run / "history.jsonl").write_text('{"epoch": 0}\n')
    _error(run_cli("search", *TINY, "--out", str(run)), "lr: 0.2 -> 0.05")
    r = run_cli("search", *TINY, "--out", str(run), "--fresh")
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "run.json").read_text())["kind"] == "search"
    assert [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()] == [0, 1]


def test_out_that_is_a_file_or_a_foreign_folder(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    _error(run_cli("search", *TINY, "--out", str(f)), "is a file")
    assert f.read_text() == "mine"
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.png").write_bytes(b"png")
    _error(run_cli("search", *TINY, "--out", str(d)), "not an hwnas run", "cat.png")
    _error(run_cli("search", *TINY, "--out", str(d), "--fresh"), "not an hwnas run")  # --fresh deletes only runs
    assert (d / "cat.png").read_bytes() == b"png"


def test_resume_takes_no_fresh(tmp_path):
    run = _sweep_folder(tmp_path / "sweep")
    _error(run_cli("search", "--resume", str(run), "--fresh"), "--fresh")


def test_export_out_replaces_only_an_hwnas_export(tmp_path):
    kit = tmp_path / "kit"
    export_kit(get_space("seed-cnn"), kit)  # a device kit: its own manifest.json and results
    (kit / "results.json").write_text("{}")
    before = _sums(kit)
    _error(run_cli("export", str(tmp_path / "no-run"), "--out", str(kit)), "not an hwnas export")
    assert _sums(kit) == before


def test_pareto_json_that_is_not_a_list(tmp_path):
    run = _sweep_folder(tmp_path / "sweep")
    (run / "pareto.json").write_text('{"arch": {}}')
    _error(run_cli("export", str(run), "--out", str(tmp_path / "e")), "pareto.json must be a list", "rerun")
    _error(run_cli("report", str(run)), "pareto.json must be a list")
    with pytest.raises(HwnasError, match="entry 0"):
        (run / "pareto.json").write_text('[{"arch": {}, "arch_id": "x", "accuracy": "high"}]')
        read_front(run)


def test_arch_id_covers_space_args():
    default, wide, same = get_space("mbconv"), get_space("mbconv", widths=[24, 32, 48]), get_space(
        "mbconv", widths=[16, 24, 32])
    arch = {c.label: c.values[0] for c in default.choices}
    assert default.arch_id(arch) == same.arch_id(arch), "arguments equal to the defaults change nothing"
    assert default.arch_id(arch) != wide.arch_id(arch)
    assert wide.to_json(arch)["space_args"] == {"widths": [24, 32, 48]}
    n = [sum(p.numel() for p in s.build(arch).parameters()) for s in (default, wide)]
    assert n[0] != n[1], "the two ids name different networks"


def test_arch_file_space_args_rebuild_the_same_network(tmp_path):
    from hwnas.run import read_arch

    space = get_space("mbconv", widths=[24, 32, 48])
    arch = {c.label: c.values[-1] for c in space.choices}
    (tmp_path / "arch.json").write_text(json.dumps(space.to_json(arch)))
    rec = read_arch(tmp_path / "arch.json")
    assert rec.arch_id == space.arch_id(arch) and rec.build_space().args == space.args
    (tmp_path / "bad.json").write_text(json.dumps({**space.to_json(arch), "space_args": {"colour": 3}}))
    with pytest.raises(HwnasError, match="space_args key .colour. is not an argument"):
        read_arch(tmp_path / "bad.json")
