"""``--runner adb[:SERIAL][?...]``: an Android phone over ``adb``.

Two ways to time there:

* native (default): onnxruntime's own ``onnxruntime_perf_test`` binary (``?bin=``, default
  ``/data/local/tmp/onnxruntime_perf_test``; push it once with ``adb push``). Per model and trial one
  process: ``[taskset MASK] onnxruntime_perf_test -I -m times -r RUNS -x THREADS -y 1 -e EP -o LEVEL model``
  (``-I``: generated input, ``-m times -r``: a fixed number of calls); the trial's statistic is its
  ``P50 Latency`` line (``Average inference time cost`` on builds that do not print percentiles). Trials
  run round-robin over a batch and combine with the protocol's ``aggregate``. Warm-up is the tool's own
  (one call); ``?ort=VERSION`` records the onnxruntime version the binary was built from.
* Python kit (``?python=/path/to/python``, e.g. Termux): the same kit as ``ssh://`` through ``adb shell``.

``?dir=`` sets the work dir on the phone (default ``/data/local/tmp/hwnas-kit``).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ..protocol import AGGREGATES, ISA_FLAGS, OPT_LEVELS, Protocol, Result
from .base import EPS, Item, OnResults, Runner, RunnerError, file_stem
from .remote import KitRunner

QUERY = ("python", "dir", "bin", "ort")
OPT_FLAG = {"disable": 0, "basic": 1, "extended": 2, "all": 99}  # onnxruntime_perf_test -o
assert set(OPT_FLAG) == set(OPT_LEVELS)
PROPS = ("ro.product.manufacturer", "ro.product.model", "ro.soc.model", "ro.build.version.release",
         "ro.product.cpu.abi")


def parse_spec(spec: str) -> tuple[str | None, dict[str, str]]:
    """``adb[:SERIAL][?k=v&...]`` -> (serial or None, options)."""
    head, _, query = spec.partition("?")
    if head != "adb" and not head.startswith("adb:"):
        raise RunnerError(f"runner {spec!r} is not adb[:SERIAL][?python=...&dir=...&bin=...]")
    serial = head[4:] or None
    opts = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(opts) - set(QUERY))
    if unknown:
        raise RunnerError(f"unknown option {unknown[0]!r} in runner {spec!r}; use {', '.join(QUERY)}")
    return serial, opts


def parse_perf_test(text: str) -> float:
    """The per-call latency (ms) in an ``onnxruntime_perf_test`` output: ``P50 Latency: <s> s``, else
    ``Average inference time cost: <ms> ms``. Raises ``RunnerError`` when neither is there."""
    unbuilt = re.search(r"^.*is not supported in this build.*$", text, re.M)
    if unbuilt:
        raise RunnerError(f"onnxruntime_perf_test on the phone: {unbuilt.group(0).strip()}; pass another --ep or "
                          "push a build with that provider")
    p50 = re.search(r"^P50 Latency:\s*([0-9.eE+-]+)\s*s\b", text, re.M)
    if p50:
        return 1000.0 * float(p50.group(1))
    avg = re.search(r"^Average inference time cost(?: total)?:\s*([0-9.eE+-]+)\s*ms", text, re.M)
    if avg:
        return float(avg.group(1))
    raise RunnerError(f"onnxruntime_perf_test printed no latency (output: {text.strip()[-200:]!r}); check that "
                      "the binary runs on the phone (adb shell <bin> -h)")


def parse_device(text: str) -> dict[str, Any]:
    """Fingerprint fields from ``getprop`` lines (``prop=value``), ``nproc=N`` and ``/proc/cpuinfo``."""
    kv: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([\w.]+)=(.*)$", line)
        key, sep, val = (m.group(1), "=", m.group(2)) if m else line.partition(":")
        if sep:
            kv.setdefault(key.strip().lower(), val.strip())
    model = " ".join(v for v in (kv.get("ro.product.manufacturer"), kv.get("ro.product.model")) if v)
    soc = kv.get("ro.soc.model") or kv.get("hardware") or kv.get("model name") or ""
    flags = set((kv.get("features") or kv.get("flags") or "").split())
    return {"cpu_model": f"{model} ({soc})" if soc else (model or "unknown"), "isa": sorted(flags & ISA_FLAGS),
            "cache": {}, "machine": kv.get("ro.product.cpu.abi", ""),
            "system": "Android", "os": f"Android {kv.get('ro.build.version.release', '?')}",
            "cpu_count": int(kv["nproc"]) if kv.get("nproc", "").isdigit() else None}


class _Adb:
    """``adb [-s SERIAL] shell|push``."""

    def __init__(self, serial: str | None) -> None:
        if shutil.which("adb") is None:
            raise RunnerError("`adb` is not on PATH; install Android platform-tools (apt-get install adb) to use "
                              "an adb runner")
        self.base = ["adb", *(("-s", serial) if serial else ())]

    def argv(self, command: str) -> list[str]:
        return [*self.base, "shell", command]

    def shell(self, command: str) -> str:
        proc = subprocess.run(self.argv(command), capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RunnerError(f"`adb shell` failed ({proc.stderr.strip()[-200:] or proc.stdout.strip()[-200:]}); "
                              "check `adb devices` and the runner's serial, then run the same command again")
        return proc.stdout

    def push(self, local: Path, remote_parent: str) -> None:
        proc = subprocess.run([*self.base, "push", str(local), f"{remote_parent}/"], capture_output=True, text=True,
                              timeout=900)
        if proc.returncode != 0:
            raise RunnerError(f"`adb push {local.name}` failed: {proc.stderr.strip()[-200:]}; check `adb devices`, "
                              "then run the same command again (it resumes)")


class AdbKitRunner(KitRunner):
    """The Python kit through ``adb shell`` (a phone with Python, numpy and onnxruntime, e.g. Termux)."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        serial, opts = parse_spec(spec)
        self.spec, self.adb = spec, _Adb(serial)
        self.python, self.dir = opts["python"], opts.get("dir", "/data/local/tmp/hwnas-kit")

    def _argv(self, command: str) -> list[str]:
        return self.adb.argv(command)

    def _push(self, local: Path, remote_parent: str) -> None:
        self.adb.push(local, remote_parent)


class AdbPerfTestRunner(Runner):
    """Times models with ``onnxruntime_perf_test`` on the phone (see the module docstring)."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        serial, opts = parse_spec(spec)
        self.spec, self.adb = spec, _Adb(serial)
        self.dir = opts.get("dir", "/data/local/tmp/hwnas-kit")
        self.bin, self.ort = opts.get("bin", "/data/local/tmp/onnxruntime_perf_test"), opts.get("ort", "unknown")

    def _fingerprint(self, protocol: Protocol) -> dict[str, Any]:
        props = "; ".join(f'echo "{p}=$(getprop {p})"' for p in PROPS)
        text = self.adb.shell(f'{props}; echo "nproc=$(nproc)"; cat /proc/cpuinfo; {shlex.quote(self.bin)} -h 2>&1')
        eps = re.search(r"-e\s*\[([a-z0-9_|]+)\]", text)
        if eps is None:
            raise RunnerError(f"{self.bin} does not run on the phone (no usage text); push onnxruntime_perf_test "
                              f"built for Android there (adb push onnxruntime_perf_test {self.bin}) or pass ?bin=")
        listed = eps.group(1).split("|")  # the tool's list; a provider not built in fails at its first run
        return {**parse_device(text), "onnxruntime": self.ort, "tool": "onnxruntime_perf_test",
                "providers": [EPS[e] for e in listed if e in EPS], "pinning": True}

    def where(self) -> str:
        return f"the phone at {self.spec} (onnxruntime_perf_test {self.bin})"

    def _trial(self, file: str, protocol: Protocol) -> float:
        ep = {v: k for k, v in EPS.items()}[protocol.provider]
        pin = f"taskset {1 << protocol.pin_core:x} " if protocol.pin_core is not None else ""
        cmd = (f"cd {shlex.quote(self.dir)} && {pin}{shlex.quote(self.bin)} -I -m times -r {protocol.runs} "
               f"-x {protocol.threads} -y 1 -e {ep} -o {OPT_FLAG[protocol.opt_level]} models/{file}")
        return parse_perf_test(self.adb.shell(cmd))

    def measure(self, items: Sequence[Item], protocol: Protocol, *, job: str, batch: int = 8,
                on_results: OnResults | None = None) -> dict[str, Result]:
        self.fingerprint(protocol)
        have = set(self.adb.shell(f"mkdir -p {shlex.quote(self.dir)}/models && ls {shlex.quote(self.dir)}/models")
                   .split())
        combine = AGGREGATES[protocol.aggregate][0]
        out: dict[str, Result] = {}
        for s in range(0, len(items), batch):
            chunk = [(name, f"{file_stem(name)}.onnx", build) for name, build in items[s:s + batch]]
            with tempfile.TemporaryDirectory(prefix="hwnas-adb-") as tmp:
                (Path(tmp) / "models").mkdir()
                new = [(f, build) for _, f, build in chunk if f not in have]
                for f, build in new:
                    (Path(tmp) / "models" / f).write_bytes(build().onnx)
                if new:  # only model files the phone lacks
                    self.adb.push(Path(tmp) / "models", self.dir)
                    have |= {f for f, _ in new}
            trials: dict[str, list[float]] = {name: [] for name, _, _ in chunk}
            for _ in range(protocol.trials):
                for name, f, _ in chunk:
                    trials[name].append(self._trial(f, protocol))
            rows = [(name, Result(*combine(t), tuple(t))) for name, t in trials.items()]
            out.update(rows)
            if on_results is not None:
                on_results(rows)
        return out
