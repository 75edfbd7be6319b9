"""The fast tier's cut (tests/_durations.py): recorded once, then slow tests and users of slow fixtures
are left out of ``-m "not slow"``; run on a small test folder in a real pytest process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONFTEST = """
import sys
sys.path.insert(0, {here!r})
import _durations
import pytest

pytest_addoption = _durations.pytest_addoption
pytest_fixture_setup = _durations.pytest_fixture_setup
pytest_runtest_call = _durations.pytest_runtest_call
pytest_sessionfinish = _durations.pytest_sessionfinish


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    _durations.mark_recorded_slow(items)
"""

TESTS = """
import time
import pytest


@pytest.fixture(scope="module")
def built():
    time.sleep(2.0)
    return 1


def test_quick():
    pass


def test_sleeps():
    time.sleep(2.0)


def test_first_user(built):
    pass


def test_second_user(built):
    pass
"""


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HWNAS_TEST_DURATIONS": str(folder / "durations.json")}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-p", "no:randomly", *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)


def test_recorded_slow_tests_and_users_of_a_slow_fixture_leave_the_fast_tier(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST.format(here=str(HERE)))
    (tmp_path / "test_x.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    first = _pytest(tmp_path, "-m", "not slow")
    assert "4 passed" in first.stdout, first.stdout + first.stderr  # nothing recorded yet: all count as fast
    rec = _pytest(tmp_path, "--record-durations")
    assert "4 passed" in rec.stdout, rec.stdout + rec.stderr
    data = json.loads((tmp_path / "durations.json").read_text())
    assert data["tests"]["test_x.py::test_sleeps"] > 1.5 > data["tests"]["test_x.py::test_quick"]
    assert data["fixtures"]["test_x.py::built"] > 1.5, data["fixtures"]
    fast = _pytest(tmp_path, "-m", "not slow", "-vv")
    assert "test_quick PASSED" in fast.stdout and "1 passed, 3 deselected" in fast.stdout, fast.stdout
