"""The ``timing`` mark: a test that asserts on wall-clock latency runs while no other test runs (conftest.py)."""

from __future__ import annotations

import fcntl
import os

import pytest


def _can_lock(kind: int) -> bool:
    """Whether a fresh open of the session's lock file can take ``kind`` now (without waiting)."""
    path = os.environ.get("HWNAS_TEST_QUIET_LOCK")
    if not path:
        pytest.skip("no quiet lock in this session (tests/conftest.py sets one up in pytest_configure)")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


@pytest.mark.timing
def test_a_timing_test_holds_the_lock_alone():
    assert not _can_lock(fcntl.LOCK_SH)  # no other test can start while this one runs


def test_other_tests_share_the_lock():
    assert _can_lock(fcntl.LOCK_SH) and not _can_lock(fcntl.LOCK_EX)  # a timing test would wait for this one
