"""Runners: a real OpenSSH server on loopback, a dropped connection, adb on recorded outputs, EP errors.

The ssh tests start Debian's ``sshd`` as the current user on a free 127.0.0.1 port with a throwaway host
key and user key (skipped when ``sshd`` is not installed). The adb test uses no phone: a fake ``adb`` on
PATH runs the shell commands against a folder standing in for the phone, where ``getprop`` and
``onnxruntime_perf_test`` replay recorded outputs (``tests/data/adb/``).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest_latency import TINY_FLAGS, assert_one_line_error, run_hwnas

from hwnas.cli import main
from hwnas.latency.measure import Passthrough, to_model
from hwnas.latency.protocol import Protocol
from hwnas.latency.runners import RunnerError, get_runner
from hwnas.latency.runners.adb import AdbPerfTestRunner, parse_perf_test
from hwnas.latency.table import load_table, unit_keys
from hwnas.space import get_space

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd",) if os.path.exists(p)), None)
DATA = Path(__file__).parent / "data" / "adb"
LIGHT = (*TINY_FLAGS[:2], "--trials", "1", *TINY_FLAGS[4:], "--batch", "16", "--calibrate-samples", "6",
         "--validate-samples", "6", "--no-progress")
needs_sshd = pytest.mark.skipif(SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                                reason="OpenSSH server not installed (apt-get install openssh-server)")


class Sshd:
    """``sshd -D`` as this user on 127.0.0.1:<free port>, keys in ``root``; ``url(...)`` for the runner."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for name in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
        (root / "authorized_keys").write_text((root / "user.pub").read_text())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        (root / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {root / 'host'}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {root / 'authorized_keys'}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
AcceptEnv HWNAS_*
Subsystem sftp internal-sftp
LogLevel ERROR
""")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory sshd needs as root
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
                                     stderr=open(self.root / "sshd.log", "a"))  # noqa: SIM115
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}") from None
                time.sleep(0.1)
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def url(self, remote: Path) -> str:
        user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        return (f"ssh://{user}@127.0.0.1:{self.port}?python={sys.executable}&dir={remote}"
                f"&identity={self.root / 'user'}&known_hosts={self.root / 'known_hosts'}&strict=accept-new")


@pytest.fixture
def sshd(tmp_path):
    server = Sshd(tmp_path / "ssh")
    yield server
    server.stop()


def _measured_names(remote: Path) -> list[str]:
    """Every model the device kit measured, once per measurement, from its logs."""
    return [json.loads(line)["measured"] for log in sorted(remote.glob("jobs/*/log.jsonl"))
            for line in log.read_text().splitlines()]


def _assert_calibrated_and_validated(table_path: Path, remote: Path) -> dict:
    space = get_space("seed-cnn")
    table = load_table(table_path, space, check_host=False)
    assert set(table.entries) == set(unit_keys(space)) and table.overhead_ms > 0
    assert table.calibration and table.calibration["n_samples"] == 6
    assert table.device["name"] == "loopback-1t" and table.device["runner"].startswith("ssh://")
    assert table.device["python"] and "CPUExecutionProvider" in table.device["providers"] and table.device["os"]
    report = json.loads(table_path.with_name("seed-cnn.validation.json").read_text())
    assert report["n"] == 6 and report["calibrated"] and report["device"]["name"] == "loopback-1t"
    # everything was timed on the device: its result files hold every unit and network
    results = [json.loads(p.read_text())["name"] for p in remote.glob("jobs/*/results/*.json")]
    assert set(unit_keys(space)) <= set(results) and sum(n[:4].isdigit() for n in results) == 12
    return report


@needs_sshd
@pytest.mark.slow
def test_ssh_runner_profiles_a_calibrated_validated_table(sshd, tmp_path):
    remote, out = tmp_path / "device", tmp_path / "tables" / "seed-cnn.json"
    proc = run_hwnas("profile", "--space", "seed-cnn", "--runner", sshd.url(remote), "--device", "loopback-1t",
                     "--out", str(out), *LIGHT)
    assert proc.returncode == 0, proc.stderr
    assert "calibrated on 6 networks" in proc.stdout and "overhead-corrected" in proc.stdout
    _assert_calibrated_and_validated(out, remote)
    assert (remote / "hwnas_kit.py").is_file() and (remote / "hwnas_protocol.py").is_file()
    names = _measured_names(remote)
    assert len(names) == len(set(names)) == len(unit_keys(get_space("seed-cnn"))) + 1 + 12


@needs_sshd
@pytest.mark.slow
def test_ssh_runner_resumes_after_a_dropped_connection(sshd, tmp_path):
    remote, out = tmp_path / "device", tmp_path / "tables" / "seed-cnn.json"
    url = sshd.url(remote)
    # the device kit kills its ssh session after 40 models: the connection drops mid-profile
    first = run_hwnas("profile", "--space", "seed-cnn", "--runner", url, "--device", "loopback-1t", "--out",
                      str(out), "--ssh-option", "SetEnv=HWNAS_KIT_DROP_AFTER=40", *LIGHT)
    assert first.returncode != 0 and "run the same command again to resume" in first.stderr, first.stderr
    assert "exit 255" in first.stderr, first.stderr  # ssh's own code for a lost connection, not the kit's exit
    before = _measured_names(remote)
    assert 40 <= len(before) < len(unit_keys(get_space("seed-cnn")))
    onnx = {p.name: p.stat().st_mtime_ns for p in remote.glob("jobs/*/models/*.onnx")}
    sshd.stop()  # the server goes away too; a fresh one on the same port serves the rerun
    sshd.start()
    second = run_hwnas("profile", "--space", "seed-cnn", "--runner", url, "--device", "loopback-1t", "--out",
                       str(out), *LIGHT)
    assert second.returncode == 0, second.stderr
    _assert_calibrated_and_validated(out, remote)
    names = _measured_names(remote)
    assert set(before) <= set(names) and len(names) == len(set(names)), "a model was measured twice"
    again = {p.name: p.stat().st_mtime_ns for p in remote.glob("jobs/*/models/*.onnx")}
    assert all(again[f] == t for f, t in onnx.items()), "a model file was pushed again"


@needs_sshd
def test_ssh_runner_names_the_devices_providers(sshd, tmp_path):
    runner = get_runner(sshd.url(tmp_path / "device"))
    with pytest.raises(RunnerError, match=r"QNNExecutionProvider is not in the onnxruntime of .*127\.0\.0\.1.*"
                                          r"CPUExecutionProvider \(--ep cpu\)"):
        runner.fingerprint(Protocol(provider="QNNExecutionProvider"))
    assert (tmp_path / "device" / "hwnas_kit.py").is_file()  # the kit was pushed and ran there to say so


def _cli(capsys, *args: str) -> tuple[int, str]:
    """``hwnas ARGS`` in this process (torch is already imported here): exit code and stderr."""
    code = main(list(args))
    return code, capsys.readouterr().err


def test_local_ep_error_names_the_available_providers(tmp_path, capsys):
    code, err = _cli(capsys, "profile", "--space", "seed-cnn", "--ep", "nnapi", "--out", str(tmp_path / "t.json"),
                     *TINY_FLAGS)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "NnapiExecutionProvider is not in the onnxruntime of this host" in err and "CPUExecutionProvider (--ep cpu)" in err
    assert not (tmp_path / "t.json").exists()


def test_bad_runner_specs_are_one_line_errors(capsys):
    for spec, fragment in (("telnet://x", "unknown runner"), ("ssh://h?pyton=x", "unknown option 'pyton'"),
                           ("ssh://h?strict=maybe", "strict='maybe'"), ("offline:", "names no folder")):
        with pytest.raises(RunnerError, match=fragment.replace("?", r"\?")):
            get_runner(spec)
    code, err = _cli(capsys, "profile", "--space", "seed-cnn", "--runner", "ssh://x@127.0.0.1:1", *TINY_FLAGS)
    assert code == 2 and "needs --device" in err and len(err.strip().splitlines()) == 1, err


# ---- adb: recorded outputs, no phone ------------------------------------------------------------------
FAKE_ADB = """#!{python}
# A stand-in for `adb`: no phone. `shell CMD` runs CMD with sh in $FAKE_PHONE (paths under /data and
# /proc/cpuinfo mapped into it; getprop and onnxruntime_perf_test there replay recorded outputs);
# `push SRC DST` copies into it. Every call is logged to $FAKE_PHONE/adb.log.
import os, shutil, subprocess, sys
root = os.environ["FAKE_PHONE"]
args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
with open(os.path.join(root, "adb.log"), "a") as f:
    f.write(repr(args) + "\\n")
def local(path):
    return path.replace("/data/", root + "/data/").replace("/proc/cpuinfo", root + "/proc/cpuinfo")
if args[0] == "shell":
    env = dict(os.environ, PATH=root + "/bin:" + os.environ["PATH"])
    sys.exit(subprocess.run(["sh", "-c", local(args[1])], env=env).returncode)
if args[0] == "push":
    src, dst = args[1], local(args[2])
    target = os.path.join(dst, os.path.basename(src.rstrip("/")))
    if os.path.isdir(src):
        shutil.copytree(src, target, dirs_exist_ok=True)
    else:
        shutil.copy(src, target)
    print(f"{{src}}: 1 file pushed.")
    sys.exit(0)
sys.exit("fake adb: unsupported " + " ".join(args))
"""

FAKE_PERF_TEST = """#!/bin/sh
# Replays a recorded onnxruntime_perf_test output (tests/data/adb/); logs its arguments.
echo "$@" >> "$FAKE_PHONE/perf_test.log"
case "$1" in -h) cat "$FAKE_PHONE/recorded/perf_test_usage.txt"; exit 0;; esac
for last; do :; done
n=$(( $(cksum < "$last" | cut -d' ' -f1) % 2 ))
cat "$FAKE_PHONE/recorded/perf_test_run_$n.txt"
"""


@pytest.fixture
def fake_phone(tmp_path, monkeypatch):
    root, bindir = tmp_path / "phone", tmp_path / "hostbin"
    for d in ("bin", "proc", "data/local/tmp", "recorded"):
        (root / d).mkdir(parents=True)
    bindir.mkdir()
    for f in DATA.glob("*.txt"):
        shutil.copy(f, root / "recorded" / f.name)
    shutil.copy(DATA / "cpuinfo.txt", root / "proc" / "cpuinfo")
    (root / "bin" / "nproc").write_text("#!/bin/sh\necho 8\n")  # the phone's 8 cores (this host has fewer)
    (root / "bin" / "taskset").write_text('#!/bin/sh\necho "$1" >> "$FAKE_PHONE/taskset.log"; shift; exec "$@"\n')
    (root / "bin" / "getprop").write_text(f"#!/bin/sh\ngrep \"^$1=\" '{root / 'recorded' / 'getprop.txt'}' | cut -d= -f2-\n")
    (root / "data/local/tmp/onnxruntime_perf_test").write_text(FAKE_PERF_TEST)
    (bindir / "adb").write_text(FAKE_ADB.format(python=sys.executable))
    for exe in (root / "bin" / "taskset", root / "bin" / "nproc", root / "bin" / "getprop", root / "data/local/tmp/onnxruntime_perf_test", bindir / "adb"):
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_PHONE", str(root))
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return root


def test_perf_test_output_parsing():
    assert parse_perf_test((DATA / "perf_test_run_0.txt").read_text()) == pytest.approx(0.0412345 * 1000)
    assert parse_perf_test("Average inference time cost: 12.5 ms\n") == 12.5
    with pytest.raises(RunnerError, match="printed no latency"):
        parse_perf_test("Segmentation fault\n")


def test_adb_runner_on_recorded_outputs(fake_phone):
    runner = get_runner("adb:emulator-5554?ort=1.15.1")
    assert isinstance(runner, AdbPerfTestRunner)
    proto = Protocol(runs=50, trials=3, threads=2, pin_core=4)
    finger = runner.fingerprint(proto)
    assert finger["cpu_model"] == "Google Pixel 7 (GS201)" and finger["os"] == "Android 14"
    assert finger["cpu_count"] == 8 and "asimddp" in finger["isa"] and finger["onnxruntime"] == "1.15.1"
    assert {"CPUExecutionProvider", "NnapiExecutionProvider", "XnnpackExecutionProvider"} <= set(finger["providers"])
    shape = get_space("seed-cnn").input_shape
    items = [(f"m{i}", lambda i=i: to_model(f"m{i}", Passthrough(), (i + 1, *shape[1:]))) for i in range(3)]
    got = runner.measure(items, proto, job="t", batch=2)
    recorded = {parse_perf_test((DATA / f"perf_test_run_{k}.txt").read_text()) for k in (0, 1)}
    assert set(got) == {"m0", "m1", "m2"} and all(r.median_ms in recorded and len(r.trial_ms) == 3
                                                   for r in got.values())
    calls = (fake_phone / "perf_test.log").read_text().splitlines()
    runs = [c for c in calls if not c.startswith("-h")]
    assert len(runs) == 9 and all("-I -m times -r 50 -x 2 -y 1 -e cpu -o 99 models/" in c for c in runs)
    log = (fake_phone / "adb.log").read_text()
    assert "taskset 10 " in log and set((fake_phone / "taskset.log").read_text().split()) == {"10"}  # core 4
    pushes = log.count("'push'")
    runner.measure(items, proto, job="t", batch=2)  # the files are on the phone: nothing is pushed again
    assert (fake_phone / "adb.log").read_text().count("'push'") == pushes
    with pytest.raises(RunnerError, match=r"QNNExecutionProvider is not in the onnxruntime of the phone.*"
                                          r"NnapiExecutionProvider \(--ep nnapi\)"):
        runner.fingerprint(Protocol(provider="QNNExecutionProvider"))


# ---- offline kit and local runner ---------------------------------------------------------------------
@pytest.mark.slow
def test_offline_kit_round_trip(tmp_path):
    kit, out = tmp_path / "kit", tmp_path / "t.json"
    args = ("profile", "--space", "seed-cnn", "--runner", f"offline:{kit}", "--device", "board-1t", "--out", str(out),
            "--limit", "5", "--calibrate-samples", "0", "--validate-samples", "0", *TINY_FLAGS, "--no-progress")
    assert_one_line_error(run_hwnas(*args), f"offline kit {kit}", "python3 hwnas_kit.py run-all")
    assert not out.exists() and (kit / "hwnas_kit.py").is_file()
    tree = ast.parse((kit / "hwnas_kit.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "hwnas_protocol" in imported and not imported & {"torch", "hwnas", "onnx"}
    ran = subprocess.run([sys.executable, "hwnas_kit.py", "run-all"], cwd=kit, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ran.returncode == 0, ran.stderr
    second = run_hwnas(*args)
    assert second.returncode == 0, second.stderr
    table = load_table(out, complete=False, check_host=False)
    assert len(table.entries) == 5 and table.overhead_ms > 0 and table.device["runner"] == f"offline:{kit}"
    assert table.device["providers"] and table.protocol["runs"] == 3


def test_local_runner_times_models_and_reports_providers():
    runner = get_runner("local")
    proto = Protocol(runs=3, trials=2, warmup_runs=1, warmup_s=0.0, max_remeasure=0, pin_core=0)
    assert "CPUExecutionProvider" in runner.fingerprint(proto)["providers"]
    shape = get_space("seed-cnn").input_shape
    seen = []
    got = runner.measure([(f"m{i}", lambda: to_model("x", Passthrough(), shape)) for i in range(3)], proto, job="j",
                         batch=2, on_results=seen.append)
    assert set(got) == {"m0", "m1", "m2"} and all(r.median_ms > 0 and len(r.trial_ms) == 2 for r in got.values())
    assert [len(b) for b in seen] == [2, 1]
