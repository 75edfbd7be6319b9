"""Shared fixtures: paths, the shared MNIST split, and running the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _durations
import _toy  # noqa: F401  (registers the toy space with a known optimum)
import pytest

# the fast tier's cut from recorded durations (tests/_durations.py): its hooks, registered through this conftest
pytest_addoption = _durations.pytest_addoption
pytest_fixture_setup = _durations.pytest_fixture_setup
pytest_runtest_call = _durations.pytest_runtest_call

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
    are shared between the workers. Tests that ``tests/durations.json`` shows slow get the ``slow`` mark
    (``_durations.py``), so that ``make test-fast`` leaves them out."""
    _durations.mark_recorded_slow(items)
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.xdist_group("ray"))


TABLED_SPACES = ("seed-cnn", "mbconv")  # the spaces whose shipped tables the tests search and export with
_HOST_TABLES_ENV = "HWNAS_TEST_HOST_TABLES"  # {space: path} chosen once per test session, inherited by workers


def _find_host_tables(spaces) -> dict[str, str]:
    import warnings

    from hwnas.latency import TableWarning, find_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TableWarning)
        return {s: str(p) for s in spaces if (p := find_table(s)) is not None}


def pytest_configure(config) -> None:
    """Choose this machine's latency tables once, before any test (profiling light ones when none fits).

    Many tests search under a budget with the table found for this machine, as a user would. The shipped
    tables cover this project's machine kinds (``amd-epyc-1t`` with AVX-512, ``amd-epyc-avx2-1t`` without;
    one is 3-4x faster than the other), and a table is only taken when its probe passes (within 10%). So
    this runs ``find_table`` once in the controlling process and records the choice in
    ``$HWNAS_TEST_HOST_TABLES`` for the workers; the passing probe is remembered in the session's
    ``$HWNAS_PROBE_CACHE``, so every CLI process the tests start takes the same table without probing
    again. When none passes (another CPU, or a slow hour), it profiles and calibrates seed-cnn and mbconv
    with a short protocol into a temporary folder named by ``$HWNAS_LATENCY_TABLES`` (a few minutes).
    Tests ask ``host_table(space)`` for the table and ``budget_ms(share)`` for a budget on this machine.
    """
    if not _WORKER and not os.environ.get(_QUIET_ENV):
        os.environ[_QUIET_ENV] = str(Path(tempfile.mkdtemp(prefix="hwnas-quiet-")) / "quiet.lock")
    if _WORKER or os.environ.get(_HOST_TABLES_ENV):
        return
    import json

    chosen = _find_host_tables(TABLED_SPACES)
    missing = [s for s in TABLED_SPACES if s not in chosen]
    if missing and not os.environ.get("HWNAS_LATENCY_TABLES"):
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
        chosen.update(_find_host_tables(missing))  # probed now: a pass is remembered for the CLI processes
        for space in missing:
            if space not in chosen:  # a light table that cannot even pass its own probe: take it anyway
                chosen[space] = str(folder / "this-machine-1t" / f"{space}.json")
                print(f"hwnas tests: the light {space} table failed its probe too; budgeted tests may fail")
    os.environ[_HOST_TABLES_ENV] = json.dumps(chosen)


def host_table(space: str = "seed-cnn") -> Path:
    """The latency table of ``space`` this test session chose for this machine (see ``pytest_configure``)."""
    import json

    chosen = json.loads(os.environ.get(_HOST_TABLES_ENV) or "{}")
    if space not in chosen:
        chosen.update(_find_host_tables([space]))
        os.environ[_HOST_TABLES_ENV] = json.dumps(chosen)
    if space not in chosen:
        pytest.fail(f"no latency table of {space} fits this machine; measure one with "
                    f"`hwnas profile --space {space}` (tests/conftest.py profiles seed-cnn and mbconv itself)")
    return Path(chosen[space])


_RANGES: dict[str, tuple[float, float]] = {}


def budget_ms(share: float, space: str = "seed-cnn") -> float:
    """A latency budget ``share`` of the way from the fastest to the slowest arch of ``space`` as this
    machine's table predicts them (0: the fastest, 1: the slowest), rounded to 0.1 us; tests use it instead
    of fixed milliseconds, which mean different things on the two machine kinds."""
    if space not in _RANGES:
        from hwnas.latency import LatencyModel
        from hwnas.space import get_space

        model = LatencyModel.load(host_table(space), get_space(space))
        _RANGES[space] = (model.min_latency()[1], model.max_latency()[1])
    lo, hi = _RANGES[space]
    return round(lo + share * (hi - lo), 4)


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


_QUIET_ENV = "HWNAS_TEST_QUIET_LOCK"  # the lock file every xdist worker of this session shares


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A test marked ``timing`` asserts on wall-clock latency (a table's probe, a quiet measurement), so it
    runs while the other ``make test`` worker runs nothing: every test holds a shared lock around its setup,
    call and teardown, a timing test an exclusive one. The turnstile (``.gate``) keeps a waiting timing test
    from being overtaken by the other worker's next tests. Without xdist nothing waits."""
    import fcntl

    path = os.environ.get(_QUIET_ENV)
    if not path:
        yield
        return
    timing = item.get_closest_marker("timing") is not None
    with open(path + ".gate", "a+") as gate, open(path, "a+") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if timing else fcntl.LOCK_SH)
        if not timing:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    _durations.pytest_sessionfinish(session)
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
