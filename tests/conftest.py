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
# apart from any other Ray on the machine: _ray_marked counts them, and they are removed at the end
RAY_TMPDIR = os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="hwr", dir="/tmp"))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST split not found at {SHARED_MNIST} (it is only on the team's machines)")
    return SHARED_MNIST


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m hwnas.cli ARGS`` as a user would; returns the completed process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
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
