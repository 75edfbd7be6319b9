"""Runners that push a self-contained kit to the device and run it there (``ssh``, ``adb`` with Python,
``offline``): the host side of ``kit.py``.

Per measurement (a *job*): ask the device which model files and results it already has (``status``),
pull those results, push only the missing model files with a ``job.json`` listing what is left, run the
kit (it streams one line per batch; each result is also written to a file on the device), and parse
the lines. A connection that drops loses nothing: the next run pulls what the device wrote and measures
only the rest.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import tempfile
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import protocol as _protocol
from ..protocol import Protocol, Result
from .base import Item, OnResults, Runner, RunnerError, file_stem

KIT_SOURCES = (("hwnas_kit.py", Path(__file__).with_name("kit.py")),  # kit.py is never imported here
               ("hwnas_protocol.py", Path(_protocol.__file__)))


def kit_digest() -> str:
    """Digest of the kit as this hwnas would push it (the device's ``info`` reports its own)."""
    h = hashlib.sha256()
    for _, src in KIT_SOURCES:
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def write_kit(folder: Path) -> None:
    """Copy the kit's two files into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in KIT_SOURCES:
        shutil.copyfile(src, folder / name)


def _json_line(text: str, what: str, where: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    raise RunnerError(f"the device kit on {where} printed no {what} (output: {text.strip()[-200:]!r}); check "
                      "that its python has numpy and onnxruntime (pass ?python=/path/to/python in the runner)")


def _result(row: dict[str, Any]) -> Result:
    return Result(float(row["median_ms"]), float(row.get("spread", 0.0)), tuple(row.get("trial_ms", ())))


class KitRunner(Runner):
    """A runner that drives ``hwnas_kit.py`` in ``self.dir`` on the device with ``self.python``."""

    dir: str
    python: str

    # ---- transport (ssh, adb) -----------------------------------------------------------------------------
    @abstractmethod
    def _argv(self, command: str) -> list[str]:
        """argv that runs the shell ``command`` on the device."""

    @abstractmethod
    def _push(self, local: Path, remote_parent: str) -> None:
        """Copy the folder ``local`` into ``remote_parent`` on the device (merging)."""

    def _shell(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(self._argv(command), capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RunnerError(f"cannot reach {self.where()} ({err}); check the runner address and that the device is "
                              "up, then run the same command again (it resumes)") from None

    def _kit(self, args: str) -> str:
        return f"cd {shlex.quote(self.dir)} && exec {shlex.quote(self.python)} hwnas_kit.py {args}"

    # ---- kit ----------------------------------------------------------------------------------------------
    def _info(self, provider: str) -> dict[str, Any] | None:
        proc = self._shell(f"mkdir -p {shlex.quote(self.dir)}/jobs && " + self._kit(f"info --provider {provider}"))
        if proc.returncode == 255 and not proc.stdout:
            raise RunnerError(f"cannot connect to {self.where()}: {proc.stderr.strip()[-300:]}; check the address, "
                              "key and known-hosts settings of the runner")
        return _json_line(proc.stdout, "fingerprint", self.where()) if proc.returncode == 0 else None

    def _fingerprint(self, protocol: Protocol) -> dict[str, Any]:
        info = self._info(protocol.provider)
        if info is None or info.get("kit") != kit_digest():
            with tempfile.TemporaryDirectory(prefix="hwnas-kit-") as tmp:
                write_kit(Path(tmp))
                for name, _ in KIT_SOURCES:  # the kit files go straight into the work dir
                    self._push_file(Path(tmp) / name, self.dir)
            info = self._info(protocol.provider)
            if info is None:
                raise RunnerError(f"the device kit does not start on {self.where()} with {self.python}; it needs "
                                  "Python 3 with numpy and onnxruntime (pass ?python=/path/to/python)")
        return {k: v for k, v in info.items() if k != "kit"}

    def _push_file(self, file: Path, remote_dir: str) -> None:
        self._push(file, remote_dir)

    def _status(self, job: str) -> dict[str, Any]:
        proc = self._shell(self._kit(f"status --job {shlex.quote(job)}"))
        if proc.returncode != 0:
            raise RunnerError(f"the device kit on {self.where()} failed to list job {job}: "
                              f"{proc.stderr.strip()[-300:]}; run the same command again (it resumes)")
        return _json_line(proc.stdout, "status", self.where())

    def _stage(self, items: Sequence[Item], protocol: Protocol, job: str, batch: int, have: dict[str, Any],
               folder: Path) -> Path:
        """Write ``folder/<job>/`` with ``job.json`` (all ``items``) and the model files not in ``have``
        (file name -> input shape of the files the device has; those are neither exported nor pushed)."""
        jdir = folder / job
        (jdir / "models").mkdir(parents=True, exist_ok=True)
        models = []
        for name, build in items:
            fname = f"{file_stem(name)}.onnx"
            shape = have.get(fname)
            if shape is None:
                model = build()
                (jdir / "models" / fname).write_bytes(model.onnx)
                shape = list(model.input_shape)
            models.append({"name": name, "file": fname, "input_shape": list(shape)})
        spec = {"protocol": protocol.to_dict(), "pin_core": protocol.pin_core, "batch": batch, "models": models}
        (jdir / "job.json").write_text(json.dumps(spec, indent=1) + "\n")
        return jdir

    def _run(self, job: str, names: set[str], on_row: Any) -> tuple[int, str]:
        """Run the job on the device, calling ``on_row`` per result line; returns (exit code, stderr tail)."""
        with subprocess.Popen(self._argv(self._kit(f"run --job {shlex.quote(job)}")), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                for row in msg.get("results", []) if isinstance(msg, dict) else []:
                    if row.get("name") in names:
                        on_row(row)
            err = proc.stderr.read()
        return proc.returncode, err.strip()[-300:]

    def measure(self, items: Sequence[Item], protocol: Protocol, *, job: str, batch: int = 8,
                on_results: OnResults | None = None) -> dict[str, Result]:
        self.fingerprint(protocol)  # pushes the kit once, checks the provider
        names = {n for n, _ in items}
        out: dict[str, Result] = {}

        def take(rows: list[dict[str, Any]]) -> None:
            got = [(r["name"], _result(r)) for r in rows if r.get("name") in names and r["name"] not in out]
            out.update(got)
            if got and on_results is not None:
                on_results(got)

        status = self._status(job)
        take(list(status.get("results", {}).values()))  # measured before a dropped connection: pulled, not redone
        todo = [(n, b) for n, b in items if n not in out]
        if not todo:
            return out
        with tempfile.TemporaryDirectory(prefix="hwnas-job-") as tmp:
            shapes = status.get("shapes", {})
            have = {f: shapes[f] for f in status.get("models", []) if f in shapes}
            jdir = self._stage(todo, protocol, job, batch, have, Path(tmp))
            self._push(jdir, f"{self.dir}/jobs")
        rc, err = self._run(job, names, lambda row: take([row]))
        missing = len(names) - len(out)
        if rc != 0 or missing:
            raise RunnerError(f"the run on {self.where()} stopped (exit {rc}: {err or 'no message'}) with {missing} "
                              f"of {len(names)} models of job {job} left; what was measured is kept on the device "
                              "and here: run the same command again to resume")
        return out
