"""A long-lived local Ray head (``hwnas cluster up``) that sweeps join instead of starting their own cluster.

A sweep that starts a private local cluster pays for ``ray.init`` (3-4 s), ``ray.shutdown`` (1-1.5 s) and
cold worker processes, about 12 s in all on a 2-core machine (benchmarks/ray_scaling.py); a sweep that joins
a running head pays about 5 s. ``start_head`` runs ``ray start --head`` once, with the safe defaults of the
private cluster ``cluster.ray_session`` starts (every listener on 127.0.0.1, no dashboard or metrics unless
asked, usage stats off, token auth on with a private token file, workers preloading ``PRELOAD``, a bounded
object store), and records it in a per-user state file; ``ray_session`` joins the head that file names.

``ray start`` runs in a new process session (``setsid``) and every process of the head (GCS, raylet, agents,
workers) stays in it after ``ray start`` exits, so the session id names exactly this head's processes:
``stop_head`` signals those, never other Ray clusters of the user (``ray stop`` would kill them all). A
session id is not reused by Linux while any process of the session lives.

This module does not import ``ray`` (``hwnas cluster status`` stays cheap); ``start_head`` imports
``cluster`` for the shared defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

from ..errors import ConfigError

STATE_ENV = "HWNAS_CLUSTER_STATE"  # overrides where the state file is (tests, several heads)
FORMAT = 1
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class HeadState:
    """What ``hwnas cluster up`` records about the head it started (the state file, JSON)."""

    address: str  # 127.0.0.1:GCS_PORT, what ``ray.init(address=...)`` joins
    gcs_port: int
    client_server_port: int  # Ray Client (ray://127.0.0.1:PORT)
    dashboard_url: str | None  # http://127.0.0.1:PORT with --dashboard, else None
    sid: int  # process session id shared by every process of the head (``ray start`` ran as its leader)
    session_dir: str  # Ray's session folder (logs under logs/)
    resources: dict[str, float]  # CPU, GPU, object_store_mb
    started_unix: float
    ray_version: str
    python: str  # the interpreter that runs the head
    uid: int = field(default_factory=os.getuid)
    format: int = FORMAT

    def describe(self) -> str:
        r = self.resources
        return (f"{self.address}: {r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU, object store "
                f"{r.get('object_store_mb', 0):g} MiB, Ray {self.ray_version}")


def state_path() -> Path:
    """``$HWNAS_CLUSTER_STATE``, else ``$XDG_CACHE_HOME/hwnas/cluster.json`` (``~/.cache/hwnas/cluster.json``)."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hwnas" / "cluster.json"


def read_state(path: Path | None = None) -> HeadState | None:
    """The recorded head, or None when there is no state file or it is not one of ours (unreadable, another
    format): such a file is left alone and treated as no head."""
    path = path or state_path()
    try:
        data = json.loads(path.read_text())
        return HeadState(**data) if data.get("format") == FORMAT else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def write_state(state: HeadState, path: Path | None = None) -> Path:
    """Write the state file atomically (a temporary file beside it, then a rename), mode 0600 from the start."""
    path = path or state_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(state), f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def remove_state(path: Path | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        (path or state_path()).unlink()


# ---------------------------------------------------------------- the head's processes


def session_pids(sid: int, marker: str | None = None) -> list[int]:
    """Pids of every live process in session ``sid`` (Linux /proc); with ``marker``, none unless one of them
    has it in its command line (so a later, unrelated session that got the same number is never taken)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid and _state_of(int(entry)) not in ("Z", "X"):
                    pids.append(int(entry))
    if marker and not any(marker in _cmdline(pid) for pid in pids):
        return []
    return pids


def head_pids(state: HeadState) -> list[int]:
    """The live processes of ``state``'s head: its session, recognised by the session folder (or GCS address)
    in a command line of the GCS, raylet or agents."""
    return session_pids(state.sid, state.session_dir or state.address)


def _state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def port_open(port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def is_alive(state: HeadState, timeout_s: float = 1.0) -> bool:
    """The head still runs: its GCS port accepts a connection on 127.0.0.1 within ``timeout_s`` and a process
    of its session lives (so another program that took the port later is not mistaken for it)."""
    return port_open(state.gcs_port, timeout_s) and bool(head_pids(state))


def live_head(*, note=None) -> HeadState | None:
    """The head the state file names if it runs and matches this Ray version, else None.

    A state file of a head that no longer runs is removed (when it is this user's) and ``note`` (a callable,
    e.g. print to stderr) gets one line saying so; a head of another Ray version gets a line too and is left.
    """
    path = state_path()
    state = read_state(path)
    if state is None:
        return None
    if not head_pids(state):  # every process of the head is gone: the file is stale
        ours = False
        with contextlib.suppress(OSError):
            ours = path.stat().st_uid == os.getuid()
        if ours:
            remove_state(path)
        if note:
            note(f"hwnas: ignoring {path}: the hwnas cluster it names ({state.address}) no longer runs"
                 + ("; removed it" if ours else ""))
        return None
    if not port_open(state.gcs_port):  # processes left but no GCS answering (stopping, or overloaded): not joined
        if note:
            note(f"hwnas: the hwnas cluster on {state.address} does not answer; not joining it (`hwnas cluster "
                 "down` stops what is left of it)")
        return None
    ray_version = version("ray")
    if state.ray_version != ray_version:
        if note:
            note(f"hwnas: not joining the hwnas cluster on {state.address}: it runs Ray {state.ray_version}, this "
                 f"is Ray {ray_version}; restart it with `hwnas cluster down && hwnas cluster up`")
        return None
    return state


def workers_of(state: HeadState) -> dict[str, int]:
    """Ray worker processes of the head by title: ``ray::IDLE`` (pooled, free) and actors/tasks by name."""
    counts: dict[str, int] = {}
    for pid in head_pids(state):
        title = _cmdline(pid).split(" ")[0]
        if title.startswith("ray::"):
            name = title.removeprefix("ray::").split(".")[0] or "?"
            counts[name] = counts.get(name, 0) + 1
    return counts


# ---------------------------------------------------------------- up and down


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(*, num_cpus: int | None = None, num_gpus: int | None = None, object_store_mb: int = 150,
               dashboard: bool = False) -> tuple[HeadState, bool]:
    """Start the hwnas head on this machine, or find the one running; returns it and whether it was started.

    Args:
        num_cpus: CPUs the head offers (default: all cores).
        num_gpus: GPUs it offers (default: what Ray detects).
        object_store_mb: size of the object store (only paths and small dicts go through it; Ray's minimum is
            75 MiB).
        dashboard: also start Ray's dashboard and metrics, on 127.0.0.1.

    Raises:
        ConfigError: ``ray start`` failed or timed out (the head's processes are stopped again), or the token
            file cannot be made.
    """
    if object_store_mb < 80:
        raise ConfigError(f"--object-store-mb must be at least 80 (Ray's minimum is 75 MiB), got {object_store_mb}")
    with _locked(state_path()):  # two `up` at once: the second waits, then finds the first one's head
        existing = read_state()
        if existing is not None and head_pids(existing):
            if port_open(existing.gcs_port, 2.0):
                return existing, False
            raise ConfigError(f"the hwnas cluster on {existing.address} has processes left but does not answer; "
                              "stop them with `hwnas cluster down`, then run `hwnas cluster up` again")
        return _start(num_cpus, num_gpus, object_store_mb, dashboard), True


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``PATH.lock`` (``flock``; released when the process ends, however it ends)."""
    import fcntl

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _start(num_cpus: int | None, num_gpus: int | None, object_store_mb: int, dashboard: bool) -> HeadState:
    from .cluster import LOOPBACK, PRELOAD, _private_token_file

    _private_token_file(create=True)
    # every port of its own (free now), so a private cluster that a sweep starts with Ray's defaults beside it
    # (``--ray-address local``) does not collide on 127.0.0.1 (the dashboard agent's 52365: its raylet dies)
    gcs_port, client_port, agent_port = _free_port(), _free_port(), _free_port()
    dash_port = _free_port() if dashboard else None
    system_config = {"preload_python_modules": list(PRELOAD),
                     **({} if dashboard else {"enable_metrics_collection": False})}
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--node-ip-address={LOOPBACK}",
           f"--port={gcs_port}", f"--ray-client-server-port={client_port}",
           f"--dashboard-agent-listen-port={agent_port}",
           f"--object-store-memory={object_store_mb * 2**20}", f"--num-cpus={num_cpus or os.cpu_count()}",
           f"--include-dashboard={'true' if dashboard else 'false'}", f"--dashboard-host={LOOPBACK}",
           "--disable-usage-stats", f"--system-config={json.dumps(system_config)}"]
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    if dash_port:
        cmd.append(f"--dashboard-port={dash_port}")
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: the node address stays 127.0.0.1 and every server binds it
    # (cluster._loopback_node says why); token auth on (``ray start`` enables it only when asked)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _stop_session(proc.pid)
        raise ConfigError(f"`ray start --head` did not finish within {START_TIMEOUT_S:g} s (stopped it again); check "
                          "the machine's load and free memory, then run hwnas cluster up again") from None
    if proc.returncode != 0 or not port_open(gcs_port, 5.0):
        _stop_session(proc.pid)
        last = [ln.strip() for ln in out.splitlines() if ln.strip()][-1:] or ["no output"]
        raise ConfigError(f"`ray start --head` failed (exit {proc.returncode}: {last[0][:300]}); stopped what it "
                          "had started; run `hwnas cluster up` again, or see `ray start --help`")
    _private_token_file(create=False)
    static = _raylet_resources(proc.pid)
    state = HeadState(
        address=f"{LOOPBACK}:{gcs_port}", gcs_port=gcs_port, client_server_port=client_port,
        dashboard_url=f"http://{LOOPBACK}:{dash_port}" if dash_port else None, sid=proc.pid,
        session_dir=_session_dir(proc.pid),
        resources={"CPU": static.get("CPU", float(num_cpus or os.cpu_count() or 1)), "GPU": static.get("GPU", 0.0),
                   "object_store_mb": float(object_store_mb)},
        started_unix=time.time(), ray_version=version("ray"), python=sys.executable)
    write_state(state)
    return state


def _session_dir(sid: int) -> str:
    """The head's session folder, from its raylet's or GCS's command line (``--session_dir=...``, logs dir)."""
    for pid in session_pids(sid):
        for word in _cmdline(pid).split():
            for key in ("--session_dir=", "--session-dir=", "--log_dir=", "--logs-dir="):
                if word.startswith(key):
                    path = Path(word[len(key):])
                    return str(path.parent if path.name == "logs" else path)
    return ""


def _raylet_resources(sid: int) -> dict[str, float]:
    """The resources the head's raylet offers, from its ``--static_resource_list=NAME,AMOUNT,...``."""
    for pid in session_pids(sid):
        for word in _cmdline(pid).split():
            if word.startswith("--static_resource_list="):
                items = word.split("=", 1)[1].split(",")
                with contextlib.suppress(ValueError):
                    return {k: float(v) for k, v in zip(items[::2], items[1::2], strict=False)}
    return {}


def stop_head(state: HeadState, timeout_s: float = 20.0) -> int:
    """Stop every process of ``state``'s head (its session) and remove the state file; returns how many there
    were. SIGTERM first, SIGKILL to what is left after ``timeout_s``."""
    stopped = _stop_session(state.sid, timeout_s, marker=state.session_dir or state.address)
    remove_state()
    _forget_current_cluster(state.address)
    return stopped


def _stop_session(sid: int, timeout_s: float = 20.0, marker: str | None = None) -> int:
    """Stop the processes of session ``sid`` in ``ray stop``'s order: the raylet first (its agents and workers
    fate-share with it), then the rest, the GCS last; each group gets SIGTERM, then SIGKILL after its share of
    ``timeout_s``. Returns how many processes there were (none when ``marker`` is in no command line)."""
    total = len(session_pids(sid, marker))
    if not total:
        return 0

    def exe(pid: int) -> str:
        return os.path.basename(_cmdline(pid).split(" ")[0])

    groups = (lambda p: exe(p) == "raylet", lambda p: exe(p) not in ("raylet", "gcs_server"), lambda p: True)
    for in_group in groups:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [p for p in session_pids(sid) if in_group(p)]
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout_s / len(groups)
            while pids and time.monotonic() < deadline:
                time.sleep(0.1)
                pids = [p for p in pids if _state_of(p) not in ("Z", "X") and _in_session(p, sid)]
            if not pids:
                break
    return total


def _in_session(pid: int, sid: int) -> bool:
    try:
        return os.getsid(pid) == sid
    except OSError:
        return False


def current_cluster_file() -> Path:
    """Where ``ray start`` writes the address of the cluster it started (what ``address="auto"`` reads)."""
    tmp = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return Path(tmp or "/tmp") / "ray" / "ray_current_cluster"


def is_current_cluster(state: HeadState) -> bool:
    """``address="auto"`` would find this head (``ray start`` recorded it last)."""
    try:
        return current_cluster_file().read_text().strip() == state.address
    except OSError:
        return False


def _forget_current_cluster(address: str) -> None:
    """Remove Ray's record of the current cluster when it still names this head, as ``ray stop`` does."""
    path = current_cluster_file()
    with contextlib.suppress(OSError):
        if path.read_text().strip() == address:
            path.unlink()
