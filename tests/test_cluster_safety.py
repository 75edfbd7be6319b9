"""A local cluster started by hwnas is safe by default: every Ray process listens on loopback only, no
dashboard or metrics port unless asked, and the auth token file is readable by its owner only.

The end-to-end tests run hwnas in a child process (its own HOME, so a fresh token file; no Ray session of
this pytest process interferes) and, while it runs, list the listening TCP sockets of that process and all
its descendants (GCS, raylet, object manager, agents, workers) by matching the socket inodes in
/proc/<pid>/fd to /proc/net/tcp and /proc/net/tcp6, so no `ss` is needed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hwnas.config import RayConfig

ROOT = Path(__file__).resolve().parents[1]
METRICS_PORTS = {44217, 44227}  # Ray 2.60's autoscaler and dashboard metrics exporters (fixed, unconditional)


@dataclass(frozen=True)
class Listener:
    pid: int
    name: str  # the process's command line, shortened
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port} pid {self.pid} {self.name}"


def _listening_inodes() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every TCP socket in LISTEN state (IPv4 and IPv6) in this namespace."""
    out = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = f[1].split(":")
            assert len(hex_ip) == width, line
            # the kernel prints each 32-bit word in host byte order (little-endian here)
            raw = b"".join(bytes.fromhex(hex_ip[i:i + 8])[::-1] for i in range(0, width, 8))
            out[int(f[9])] = (str(ipaddress.ip_address(raw)), int(hex_port, 16))
    return out


def _descendants(root: int) -> set[int]:
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = {root}, [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in found]
        found.update(kids)
        todo.extend(kids)
    return found


def listeners_of(root: int) -> set[Listener]:
    """Listening TCP sockets owned by ``root`` or any of its descendants."""
    inodes = _listening_inodes()
    found = set()
    for pid in _descendants(root):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
            words = words or [Path(f"/proc/{pid}/comm").read_text().strip() or "?"]  # a process on its way out
        except OSError:
            continue
        name = " ".join(os.path.basename(w) if i == 0 else w for i, w in enumerate(words[:2]))[:80]
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                found.add(Listener(pid, name, *inodes[int(link[8:-1])]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # [::ffff:127.0.0.1] on a dual-stack socket
        ip = ip.ipv4_mapped
    return ip.is_loopback


CHILD = r"""
import sys, time
from hwnas.config import RayConfig, SearchConfig, SweepConfig

mode, out = sys.argv[1], sys.argv[2]
if mode == "sweep":
    from hwnas.distributed import run_shards

    cfg = SearchConfig(space="seed-cnn", dataset="digits", data_limit=200, epochs=1, warmup_epochs=0,
                       fine_tune_epochs=0, threads=1)
    # accuracy-only shards (no latency table needed): two seeds, two shard actors on two CPUs
    res = run_shards(cfg, SweepConfig(targets=[None], seeds=[0, 1]), RayConfig(num_cpus=2), out, progress=False)
    print("CANDIDATES", len(res.candidates), flush=True)
else:
    import ray
    from hwnas.distributed.cluster import PRELOAD, ray_session

    with ray_session(RayConfig(num_cpus=1, dashboard=True)) as where:
        print(where, flush=True)
        # a worker process has torch and hwnas imported before it runs anything (PRELOAD)
        missing = ray.get(ray.remote(lambda: [m for m in PRELOAD if m not in sys.modules]).remote(), timeout=60)
        assert missing == [], f"not preloaded in the worker: {missing}"
        print("READY", flush=True)
        sys.stdin.readline()
"""


def _child_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_AUTH_", "RAY_API_SERVER")) and k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _start(mode: str, tmp_path: Path, home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, str(tmp_path / "run")], cwd=ROOT,
                            env=_child_env(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """Kill the child and whatever Ray processes it left (its session only)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for pid in _session_pids(proc.pid):
        try:
            os.kill(pid, 9)
        except OSError:
            pass


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def _assert_private(token: Path) -> None:
    assert token.is_file(), f"no token file at {token}"
    mode = stat.S_IMODE(token.stat().st_mode)
    assert mode & 0o077 == 0, f"{token} has mode {mode:o}; want 0600"


needs_proc = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


@needs_proc
@pytest.mark.ray
@pytest.mark.timeout(240)
def test_a_local_sweep_listens_on_loopback_only(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    proc = _start("sweep", tmp_path, home)
    seen: set[Listener] = set()
    try:
        deadline = time.monotonic() + 200
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= listeners_of(proc.pid)
            time.sleep(0.3)
        out = proc.communicate(timeout=30)[0] if proc.poll() is not None else ""
        assert proc.returncode == 0, f"the sweep failed ({proc.returncode}):\n{out[-6000:]}"
    finally:
        _stop(proc)
    assert "CANDIDATES 2" in out, out[-3000:]
    assert (tmp_path / "run" / "pareto.json").is_file()
    names = {entry.name.split()[0] for entry in seen}
    # the sockets were really seen: the GCS, the raylet and at least one worker process
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), sorted(map(str, seen))
    exposed = sorted(str(entry) for entry in seen if not is_loopback(entry.address))
    assert not exposed, "listening on a non-loopback address:\n" + "\n".join(exposed)
    # No dashboard unless asked: its process serves nothing but its metrics port. Ray 2.60 starts the
    # dashboard's and the autoscaler's Prometheus exporters (fixed ports) whatever the config says; they are
    # on loopback now. The per-node metrics agent exporter is off (enable_metrics_collection=False).
    head = [str(e) for e in seen if "dashboard.py" in e.name or "monitor.py" in e.name]
    assert all(e.port in METRICS_PORTS for e in seen if "dashboard.py" in e.name or "monitor.py" in e.name), head
    _assert_private(home / ".ray" / "auth_token")  # created by hwnas, 0600 from the start


@needs_proc
@pytest.mark.ray
@pytest.mark.timeout(180)
def test_dashboard_when_asked_is_on_loopback_and_a_wide_token_file_is_fixed(tmp_path):
    home = tmp_path / "home"
    token = home / ".ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.write_text("ab" * 32)
    token.chmod(0o644)  # what `ray get-auth-token --generate` leaves
    proc = _start("dashboard", tmp_path, home)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "READY":
                break
        assert lines and lines[-1].strip() == "READY", "".join(lines)[-6000:]
        seen = listeners_of(proc.pid)
        _assert_private(token)
        assert token.read_text() == "ab" * 32  # the user's token is kept
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        _stop(proc)
    where = next(line for line in lines if line.startswith("Ray "))
    m = re.search(r"local cluster on 127\.0\.0\.1, dashboard http://127\.0\.0\.1:(\d+)\b", where)
    assert m, where
    dash_port = int(m.group(1))
    assert any(entry.port == dash_port for entry in seen), sorted(map(str, seen))
    exposed = sorted(str(entry) for entry in seen if not is_loopback(entry.address))
    assert not exposed, "listening on a non-loopback address:\n" + "\n".join(exposed)


# ---------------------------------------------------------------- no cluster: the token file helper


def test_token_file_is_created_private_and_a_wide_one_is_narrowed(tmp_path, monkeypatch):
    from hwnas.distributed.cluster import _private_token_file, token_file

    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    default = tmp_path / ".ray" / "auth_token"
    assert token_file() == default
    _private_token_file(create=True)
    _assert_private(default)
    assert len(default.read_text()) == 64 and int(default.read_text(), 16) >= 0
    assert stat.S_IMODE(default.parent.stat().st_mode) & 0o077 == 0

    # an existing, world-readable token keeps its value and loses the group/other bits
    default.write_text("cd" * 32)
    default.chmod(0o644)
    _private_token_file(create=True)
    assert stat.S_IMODE(default.stat().st_mode) == 0o600 and default.read_text() == "cd" * 32

    # $RAY_AUTH_TOKEN_PATH: fixed, never created
    other = tmp_path / "elsewhere" / "token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(other))
    _private_token_file(create=True)
    assert not other.exists()
    other.parent.mkdir()
    other.write_text("ef" * 32)
    other.chmod(0o664)
    _private_token_file(create=False)
    assert stat.S_IMODE(other.stat().st_mode) == 0o600

    # the token in $RAY_AUTH_TOKEN, or auth explicitly off: no file is touched
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x" * 64)
    assert token_file() is None
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    other.chmod(0o644)
    _private_token_file(create=True)
    assert stat.S_IMODE(other.stat().st_mode) == 0o644


def test_dashboard_is_off_by_default_and_a_flag():
    assert RayConfig().dashboard is False
    from hwnas.cli import main  # noqa: F401  (the flag is wired)
    from hwnas.commands.search import RAY_FIELDS

    assert RAY_FIELDS["dashboard"] == "dashboard"


def test_cluster_nodes_preload_what_a_local_cluster_preloads():
    from hwnas.distributed.cluster import PRELOAD

    setting = "RAY_preload_python_modules=" + ",".join(PRELOAD)
    # (benchmarks/ray_scaling.py joins `hwnas cluster up`, whose head preloads PRELOAD: tests/test_cluster_head.py)
    for name in ("cluster/Dockerfile", "cluster/launcher/gpu.yaml"):
        text = (ROOT / name).read_text()
        assert setting in text or setting.replace("=", '": "', 1) in text, f"{name} lacks {setting}"
