"""The fast tier's cut, from measured durations: ``tests/durations.json``.

``make test-fast`` runs ``-m "not slow and not ray"``. Besides the tests marked ``slow`` by hand, a test is
slow when its last recorded call took more than ``SLOW_SECONDS``, or when it uses a fixture whose own setup
took more than that (a module fixture that runs a whole search makes every test using it slow, not only
the first one to ask for it). The durations are recorded by a full run::

    pytest -n 2 --dist loadgroup --record-durations      # make durations

which updates ``tests/durations.json`` (each xdist worker writes its part, the controller merges them).
A test not recorded yet counts as fast until the next recording; the slow mark a test gets this way shows
in ``pytest --markers``-style output as ``slow`` with ``reason=recorded``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

SLOW_SECONDS = 1.5
DURATIONS = Path(os.environ.get("HWNAS_TEST_DURATIONS") or Path(__file__).resolve().parent / "durations.json")
_OPTION = "--record-durations"


def pytest_addoption(parser) -> None:
    parser.addoption(_OPTION, action="store_true",
                     help=f"record each test's call time and each fixture's setup time in {DURATIONS.name}")


def _fixture_key(fixturedef) -> str:
    return f"{fixturedef.baseid}::{fixturedef.argname}"


def _recording(config) -> dict | None:
    if not config.getoption(_OPTION):
        return None
    if not hasattr(config, "_hwnas_durations"):
        config._hwnas_durations = {"tests": {}, "fixtures": {}}
    return config._hwnas_durations


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    rec = _recording(request.config)
    start = time.perf_counter()
    yield
    if rec is not None:
        key = _fixture_key(fixturedef)
        rec["fixtures"][key] = max(rec["fixtures"].get(key, 0.0), round(time.perf_counter() - start, 3))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = time.perf_counter()
    yield
    rec = _recording(item.config)
    if rec is not None:
        rec["tests"][item.nodeid] = round(time.perf_counter() - start, 3)


def _load() -> dict:
    try:
        data = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {"tests": {}, "fixtures": {}}
    return {"tests": dict(data.get("tests", {})), "fixtures": dict(data.get("fixtures", {}))}


def _write(data: dict) -> None:
    data = {"slow_seconds": SLOW_SECONDS, "tests": dict(sorted(data["tests"].items())),
            "fixtures": dict(sorted(data["fixtures"].items()))}
    tmp = DURATIONS.with_name(DURATIONS.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=0) + "\n")
    os.replace(tmp, DURATIONS)


def pytest_sessionfinish(session) -> None:
    """A worker writes its part; the controller (or a run without xdist) merges the parts into the file."""
    config = session.config
    if not config.getoption(_OPTION):
        return
    mine = getattr(config, "_hwnas_durations", {"tests": {}, "fixtures": {}})
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        part = DURATIONS.with_name(f"{DURATIONS.name}.{worker}.part")
        part.write_text(json.dumps(mine))
        return
    new = {"tests": dict(mine["tests"]), "fixtures": dict(mine["fixtures"])}
    for p in sorted(DURATIONS.parent.glob(f"{DURATIONS.name}.*.part")):
        got = json.loads(p.read_text())
        new["tests"].update(got["tests"])
        for k, v in got["fixtures"].items():  # a module fixture may be set up on both workers: the longer
            new["fixtures"][k] = max(v, new["fixtures"].get(k, 0.0))
        p.unlink()
    data = _load()
    data["tests"].update(new["tests"])
    data["fixtures"].update(new["fixtures"])
    _write(data)


def mark_recorded_slow(items) -> None:
    """Add ``slow`` to the tests that ``durations.json`` shows slow (their call, or a fixture they use)."""
    data = _load()
    slow_tests = {k for k, v in data["tests"].items() if v > SLOW_SECONDS}
    slow_fixtures = {k for k, v in data["fixtures"].items() if v > SLOW_SECONDS}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = [d for ds in (info.name2fixturedefs.values() if info else ()) for d in ds]
        if item.nodeid in slow_tests or any(_fixture_key(d) in slow_fixtures for d in defs):
            item.add_marker(pytest.mark.slow(reason="recorded"))
