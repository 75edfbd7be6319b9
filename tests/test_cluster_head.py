"""``hwnas cluster up|status|down``: a real long-lived head, started through the CLI as a user would.

The head runs with its own HOME (a fresh token file) and state file (``HWNAS_CLUSTER_STATE`` in a temporary
folder), so neither the user's cluster nor their ``~/.ray`` is touched. The tests run in file order on one
head: up (loopback listeners, private files), status, a second up, a sweep that joins it, down; a module
fixture's finaliser stops the head's processes (its process session) whatever happened. Then the ways a
sweep does not join: a stale state file, and ``--ray-address local``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_cluster_safety import _listening_inodes, is_loopback, needs_proc

from hwnas.distributed import local_head
from hwnas.distributed.cluster import PRELOAD

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [needs_proc, pytest.mark.ray]

SWEEP = ("search", "--space", "seed-cnn", "--dataset", "digits", "--data-limit", "120", "--epochs", "1",
         "--warmup-epochs", "0", "--fine-tune-epochs", "0", "--verify-k", "1", "--threads", "1", "--seeds", "0,1",
         "--no-report")

SESSION = r"""
import sys
from hwnas.config import RayConfig
from hwnas.distributed.cluster import ray_session

with ray_session(RayConfig(num_cpus=1, address=sys.argv[1] or None)) as where:
    print(where, flush=True)
"""


class Env:
    """A child-process environment of its own: HOME, the state file, no inherited Ray address or auth."""

    def __init__(self, base: Path) -> None:
        self.home, self.state = base / "home", base / "state" / "cluster.json"
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH_", "RAY_API_SERVER"))
               and k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PYTHONPATH")}
        env.update(HOME=str(self.home), HWNAS_CLUSTER_STATE=str(self.state), RAY_USAGE_STATS_ENABLED="0",
                   OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.vars = env

    def hwnas(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hwnas.cli", *args], cwd=ROOT, env=self.vars, text=True,
                              capture_output=True, timeout=timeout)

    def session(self, address: str = "") -> subprocess.CompletedProcess:
        """Open and close ``ray_session`` in a child process; its output says which cluster it used."""
        return subprocess.run([sys.executable, "-c", SESSION, address], cwd=ROOT, env=self.vars, text=True,
                              capture_output=True, timeout=180, start_new_session=True)


def _ok(r: subprocess.CompletedProcess, code: int = 0) -> str:
    assert r.returncode == code, f"exit {r.returncode}, wanted {code}:\n{r.stdout}\n{r.stderr[-4000:]}"
    return r.stdout


def _kill(sid: int) -> None:
    for pid in local_head.session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _session_listeners(sid: int) -> set[tuple[int, str, str, int]]:
    """(pid, executable, address, port) of every listening TCP socket of the processes in session ``sid``."""
    inodes, found = _listening_inodes(), set()
    for pid in local_head.session_pids(sid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            name = os.path.basename(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                found.add((pid, name, *inodes[int(link[8:-1])]))
    return found


def _system_config(sid: int) -> dict:
    """The ``_system_config`` the head's GCS runs with (``--config_list=BASE64(JSON)`` on its command line)."""
    for pid in local_head.session_pids(sid):
        for word in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            if word.startswith(b"--config_list="):
                return json.loads(base64.b64decode(word.split(b"=", 1)[1]))
    return {}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("head"))
    yield e
    state = local_head.read_state(e.state)
    if state is not None:  # a test failed before `down`: the CLI first, then whatever is left of the session
        e.hwnas("cluster", "down", timeout=60)
        _kill(state.sid)


UP = ("cluster", "up", "--num-cpus", "2", "--object-store-mb", "100")


def _head(env: Env) -> local_head.HeadState:
    """The head of ``env``, started here when no earlier test left one running: the tests of this module share
    one head but do not depend on the order they run in (pytest-xdist may run them in another)."""
    if local_head.read_state(env.state) is None:
        _ok(env.hwnas(*UP))
    state = local_head.read_state(env.state)
    assert state is not None, f"`hwnas {' '.join(UP)}` wrote no state file at {env.state}"
    return state


@pytest.mark.timeout(150)
def test_up_starts_a_private_loopback_head_and_records_it(env):
    if local_head.read_state(env.state) is not None:  # another test of the module started it: a fresh one
        _ok(env.hwnas("cluster", "down", timeout=60))
    out = _ok(env.hwnas(*UP))
    assert "started the hwnas cluster on 127.0.0.1:" in out, out
    assert stat.S_IMODE(env.state.stat().st_mode) == 0o600
    data = json.loads(env.state.read_text())
    state = local_head.read_state(env.state)
    assert state is not None and data["address"] == f"127.0.0.1:{state.gcs_port}"
    assert state.resources == {"CPU": 2.0, "GPU": 0.0, "object_store_mb": 100.0}
    assert state.ray_version == __import__("ray").__version__ and state.session_dir.startswith("/")
    token = env.home / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    seen = _session_listeners(state.sid)
    names = {name for _, name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names, sorted(seen)
    assert any(port == state.gcs_port for *_, port in seen), sorted(seen)
    exposed = sorted(s for s in seen if not is_loopback(s[2]))
    assert not exposed, f"listening on a non-loopback address: {exposed}"
    # its workers import torch and hwnas as they start; no metrics collection (the head's system config)
    config = _system_config(state.sid)
    assert config.get("preload_python_modules") == list(PRELOAD), config
    assert config.get("enable_metrics_collection") is False, config


def _cli(env: Env, monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``hwnas ARGS`` in this process (status, down and a second up start nothing), with ``env``'s files."""
    from hwnas.cli import main

    monkeypatch.setenv("HOME", str(env.home))
    monkeypatch.setenv(local_head.STATE_ENV, str(env.state))
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().out


@pytest.mark.timeout(180)
def test_status_and_a_second_up(env, monkeypatch, capsys):
    state = _head(env)
    code, out = _cli(env, monkeypatch, capsys, "cluster", "status")
    assert code == 0 and f"hwnas cluster on {state.address}: 2 CPU, 0 GPU" in out and "worker processes:" in out, out
    before = env.state.read_text()
    code, out = _cli(env, monkeypatch, capsys, "cluster", "up", "--num-cpus", "1")
    assert code == 0 and f"runs already on {state.address}" in out, out
    assert env.state.read_text() == before  # a no-op: the same head, the same record


@pytest.mark.timeout(180)
def test_a_sweep_joins_the_head_and_leaves_it_running(env, tmp_path):
    state = _head(env)
    r = env.hwnas(*SWEEP, "--out", str(tmp_path / "run"))
    out = _ok(r)
    assert re.search(rf"Ray [\d.]+, joined the hwnas cluster on {re.escape(state.address)} \(hwnas cluster up\)",
                     out), out
    assert "hwnas cluster up` keeps" not in r.stderr  # no hint: it did not start a cluster
    assert (tmp_path / "run" / "pareto.json").is_file()
    assert local_head.is_alive(state)  # the sweep disconnected; the head runs on


@pytest.mark.timeout(120)
def test_ray_address_local_starts_a_private_cluster_and_auto_joins_the_head(env):
    state = _head(env)
    r = env.session("local")
    assert "local cluster on 127.0.0.1" in _ok(r) and "joined" not in r.stdout, r.stdout
    assert "hwnas cluster up" not in r.stderr  # asked for a private cluster: no hint
    assert local_head.is_alive(state)
    # `ray start` recorded the head for `auto`; Ray alone would turn its 127.0.0.1 into this machine's IP
    assert f"joined the hwnas cluster on {state.address}" in _ok(env.session("auto"))


@pytest.mark.timeout(90)
def test_down_stops_the_heads_processes_and_removes_the_record(env, monkeypatch, capsys):
    state = _head(env)
    assert local_head.head_pids(state)
    code, out = _cli(env, monkeypatch, capsys, "cluster", "down")
    assert code == 0 and f"stopped the hwnas cluster on {state.address}" in out, out
    assert not env.state.exists()
    assert local_head.session_pids(state.sid) == []
    assert not local_head.port_open(state.gcs_port)
    code, out = _cli(env, monkeypatch, capsys, "cluster", "status")
    assert code == 1 and "no hwnas cluster running" in out
    assert _cli(env, monkeypatch, capsys, "cluster", "down") == (0, f"no hwnas cluster running (no state file at "
                                                                    f"{env.state})\n")


@pytest.mark.timeout(120)
def test_a_stale_state_file_is_ignored_and_removed(tmp_path):
    env = Env(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    sid = int(dead.stdout)  # a process that has exited: no session of that number with a Ray process
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    stale = local_head.HeadState(address=f"127.0.0.1:{port}", gcs_port=port, client_server_port=port,
                                 dashboard_url=None, sid=sid, session_dir="/tmp/ray/session_gone", resources={},
                                 started_unix=0.0, ray_version=__import__("ray").__version__, python=sys.executable)
    local_head.write_state(stale, env.state)
    r = env.session()
    assert "local cluster on 127.0.0.1" in _ok(r), r.stdout
    assert "no longer runs; removed it" in r.stderr and "`hwnas cluster up` keeps" in r.stderr, r.stderr
    assert not env.state.exists()


# ---------------------------------------------------------------- no cluster: the state file and the flags


@pytest.mark.timeout(30)
def test_state_file_round_trip_and_foreign_files(tmp_path, monkeypatch):
    path = tmp_path / "deep" / "cluster.json"
    monkeypatch.setenv(local_head.STATE_ENV, str(path))
    assert local_head.state_path() == path and local_head.read_state() is None
    state = local_head.HeadState(address="127.0.0.1:1", gcs_port=1, client_server_port=2, dashboard_url=None,
                                 sid=1, session_dir="", resources={"CPU": 1.0}, started_unix=1.0,
                                 ray_version="0", python=sys.executable)
    local_head.write_state(state)
    assert local_head.read_state() == state and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["cluster.json"]  # no temporary file left
    path.write_text("{not json")
    assert local_head.read_state() is None
    path.write_text(json.dumps({"format": 99}))
    assert local_head.read_state() is None and local_head.live_head() is None and path.exists()


def test_up_refuses_bad_sizes(tmp_path, monkeypatch, capsys):
    from hwnas.cli import main

    monkeypatch.setenv(local_head.STATE_ENV, str(tmp_path / "cluster.json"))
    for flags, message in ((["--object-store-mb", "10"], "--object-store-mb must be at least 80"),
                           (["--num-cpus", "0"], "--num-cpus must be at least 1")):
        assert main(["cluster", "up", *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "cluster.json").exists()
