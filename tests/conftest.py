"""Shared fixtures: paths, the shared MNIST split, and running the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _toy  # noqa: F401  (registers the toy space with a known optimum)
import pytest

ROOT = Path(__file__).resolve().parents[1]
# probes of latency tables are remembered per test session, not in the user's ~/.cache (subprocesses inherit it)
os.environ.setdefault("HWNAS_PROBE_CACHE", str(Path(tempfile.mkdtemp(prefix="hwnas-probes-")) / "probes.json"))
# sweeps in tests never join a cluster the developer keeps running with `hwnas cluster up` (none recorded here)
os.environ.setdefault("HWNAS_CLUSTER_STATE", str(Path(tempfile.mkdtemp(prefix="hwnas-cluster-")) / "cluster.json"))
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
# Ray clusters started by this test session (and the CLI processes it runs) keep their session folders here,
# apart from any other Ray on the machine: _ray_marked counts them. Under `pytest -n 2` (make test) every
# worker has its own, so one worker's clusters are never counted against another's tests.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER:
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix=f"hwr{_WORKER}", dir="/tmp")
    # two workers share the 2 cores: one compute thread each (a test's explicit --threads still wins)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
RAY_TMPDIR = os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="hwr", dir="/tmp"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Tests that start a Ray cluster run one after another on one worker under ``pytest -n 2 --dist
    loadgroup`` (``make test``): two clusters at once would contend for Ray's fixed ports; the other tests
    are shared between the workers."""
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.xdist_group("ray"))


TABLED_SPACES = ("seed-cnn", "mbconv")  # the spaces whose shipped tables the tests search and export with


def pytest_configure(config) -> None:
    """On a machine that none of the shipped tables fits now, profile light ones first (``make test`` only).

    Many tests search under a budget with the table found for this machine, as a user would. The shipped
    tables cover this project's machine kinds, but a table is only taken when its probe passes (within 10%),
    and these shared VMs drift by 5-12% between hours. So when no table passes (another CPU, or a slow
    hour), this profiles and calibrates seed-cnn and mbconv with a short protocol into a temporary folder
    named by ``$HWNAS_LATENCY_TABLES``, which the workers and every CLI process inherit. It runs in the
    controlling process of ``pytest -n``, before the workers start; a passing probe is remembered in the
    session's ``$HWNAS_PROBE_CACHE``, so the tests see the same table throughout.
    """
    if _WORKER or not getattr(config.option, "numprocesses", None) or os.environ.get("HWNAS_LATENCY_TABLES"):
        return
    import warnings

    from hwnas.latency import TableWarning, find_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TableWarning)
        missing = [s for s in TABLED_SPACES if find_table(s) is None]
    if not missing:
        return
    folder = Path(tempfile.mkdtemp(prefix="hwnas-test-tables-"))
    print(f"\nhwnas tests: no shipped latency table passes its probe on this machine now for "
          f"{', '.join(missing)}; profiling light ones into {folder} (a few minutes)", flush=True)
    light = ["--runs", "40", "--trials", "2", "--warmup-runs", "5", "--warmup-s", "0.05", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HWNAS_LATENCY_TABLES": str(folder)}
    for space in missing:
        table = folder / "this-machine-1t" / f"{space}.json"
        for cmd in (["profile", "--space", space, "--device", "this-machine-1t", "--out", str(table)],
                    ["latency", "calibrate", "--table", str(table), "--samples", "32"]):
            subprocess.run([sys.executable, "-m", "hwnas.cli", *cmd, *light], env=env, check=True, cwd=ROOT)
    os.environ["HWNAS_LATENCY_TABLES"] = str(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TableWarning)
        for space in missing:  # probe them now: a pass is remembered for the workers and CLI processes
            if find_table(space) is None:
                print(f"hwnas tests: the light {space} table failed its probe too; budgeted tests may fail")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST split not found at {SHARED_MNIST} (it is only on the team's machines)")
    return SHARED_MNIST


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m hwnas.cli ARGS`` as a user would; returns the completed process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run([sys.executable, "-m", "hwnas.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=env)


def _ray_sessions() -> set[str]:
    """Ray session folders of this test session (one per cluster started)."""
    root = Path(RAY_TMPDIR) / "ray"
    try:
        return {p.name for p in root.iterdir() if p.name.startswith("session_2")}
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def _ray_marked(request):
    """A test that starts a Ray cluster must carry the ``ray`` mark, so that ``make test-fast`` (``-m "not slow
    and not ray"``) really runs without one: an unmarked test that starts one fails, naming the mark."""
    if request.node.get_closest_marker("ray") is not None:
        yield
        return
    before = _ray_sessions()
    yield
    started = _ray_sessions() - before
    assert not started, (f"{request.node.nodeid} started a Ray cluster ({sorted(started)[0]}) without "
                         "@pytest.mark.ray; mark it so that the fast tier leaves it out")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    session.config._hwnas_exitstatus = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """Leave without the interpreter's teardown once pytest has reported everything.

    This one process starts and stops many Ray sessions, onnxruntime sessions and torch thread pools; CI once
    printed "843 passed" and then died of SIGSEGV while the interpreter was tearing those native libraries
    down (make reported a segmentation fault, so the run failed). Nothing of the tests' outcome is decided
    there: an open Ray session is shut down properly first, output is flushed, and the exit status is
    pytest's own.
    """
    status = getattr(config, "_hwnas_exitstatus", None)
    if status is None or os.environ.get("HWNAS_TEST_TEARDOWN") == "1":  # HWNAS_TEST_TEARDOWN=1: the normal exit
        return
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
