"""hwnas installed from its wheel, with no checkout around: the shipped tables and configs come with it.

The wheel is built from this checkout and installed into a fresh virtualenv that borrows the test
environment's installed dependencies (torch, onnxruntime, ...) through a ``.pth`` file, so nothing is
downloaded; the checkout's own editable hwnas is not visible there (``.pth`` files of a borrowed folder are
not processed). Commands then run from an empty temporary folder with an empty home (no user tables), as on
a fresh machine; only the test session's probe cache comes along: the wheel's copy of this machine's
shipped table has the same bytes as the checkout's, whose probe passed before the tests began (a probe of
its own while the other test worker trains would fail for contention, not for the table).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, budget_ms, host_table

pytestmark = pytest.mark.slow
BUDGET = f"{budget_ms(0.4):g}"  # 40% of the way from the fastest to the slowest arch on this machine


def _needs_shipped_host_table() -> None:
    if not host_table("seed-cnn").is_relative_to(ROOT / "latency_tables"):
        pytest.skip(f"no shipped seed-cnn table passes its probe on this machine now (the tests use "
                    f"{host_table('seed-cnn')}), so an installed wheel has none to find")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                 "--wheel-dir", str(out), str(ROOT)], cwd=build, env={**os.environ, "PIP_NO_INDEX": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = out.glob("hwnas-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(home / "v")], check=True)
    py = home / "v" / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], cwd=home,
                env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return home / "v"


def _fresh_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HWNAS_LATENCY_TABLES")}
    return {**env, "HOME": str(tmp / "home"), "XDG_DATA_HOME": str(tmp / "home" / "data")}


def test_wheel_carries_tables_configs_license_and_types(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tables = sorted(n.split("_shipped/")[1] for n in names if "/_shipped/latency_tables/" in n)
    configs = sorted(n.split("_shipped/")[1] for n in names if "/_shipped/configs/" in n)
    assert tables == sorted(f"latency_tables/{p.relative_to(ROOT / 'latency_tables')}"
                            for p in (ROOT / "latency_tables").glob("*/*.json"))
    assert configs == sorted(f"configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml"))
    assert "hwnas/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_installed_wheel_searches_under_a_budget_outside_a_checkout(venv, tmp_path):
    _needs_shipped_host_table()
    env, work = _fresh_env(tmp_path), tmp_path / "work"
    work.mkdir()
    where = _run([str(venv / "bin" / "python"), "-c", "import hwnas; print(hwnas.__file__)"], work, env)
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr  # not the checkout's
    hwnas = str(venv / "bin" / "hwnas")
    proc = _run([hwnas, "search", "--space", "seed-cnn", "--dataset", "digits", "--target-ms", BUDGET,
                 "--epochs", "3", "--warmup-epochs", "1", "--data-limit", "300", "--out", "run", "--no-progress",
                 "--json"], work, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    arch = json.loads((work / "run" / "arch.json").read_text())
    assert arch["predicted_latency_ms"] <= float(BUDGET)
    assert Path(arch["latency_table"]).is_relative_to(venv)  # the wheel's own copy of the shipped table
    # the shipped configs by name, from a folder that has no configs/
    listed = _run([hwnas, "configs"], work, env)
    assert listed.returncode == 0 and "digits-demo" in listed.stdout
    shown = _run([hwnas, "configs", "digits-demo"], work, env)
    assert shown.returncode == 0 and "space: seed-cnn" in shown.stdout


def test_profile_outside_a_checkout_writes_to_the_user_folder(venv, tmp_path):
    _needs_shipped_host_table()
    env, work = _fresh_env(tmp_path), tmp_path / "work"
    work.mkdir()
    proc = _run([str(venv / "bin" / "hwnas"), "profile", "--space", "seed-cnn", "--device", "mine", "--limit", "2",
                 "--runs", "5", "--trials", "1", "--warmup-s", "0", "--no-progress"], work, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    user = Path(env["XDG_DATA_HOME"]) / "hwnas" / "latency_tables" / "mine" / "seed-cnn.json"
    assert user.is_file(), proc.stdout + proc.stderr
    assert len(json.loads(user.read_text())["entries"]) >= 2
    assert not (work / "latency_tables").exists()
    # an incomplete table is never picked: the search still uses the complete shipped one
    proc = _run([str(venv / "bin" / "hwnas"), "search", "--space", "seed-cnn", "--dataset", "digits", "--target-ms",
                 BUDGET, "--epochs", "2", "--warmup-epochs", "1", "--data-limit", "200", "--out", "run",
                 "--no-progress"], work, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "incomplete" in proc.stderr  # the skipped table is named, with the command that completes it
    arch = json.loads((work / "run" / "arch.json").read_text())
    assert Path(arch["latency_table"]).is_relative_to(venv)
