"""``--runner offline:FOLDER``: an air-gapped device. hwnas writes the kit and the models to time into
FOLDER; you copy it to the device, run ``python3 hwnas_kit.py run-all`` there (Python, numpy and
onnxruntime), copy it back and run the same ``hwnas profile`` command again. A calibrated, validated
table takes two trips (units and calibration networks first; the held-out validation networks are chosen
from the calibrated table, so they go on the second).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..protocol import Protocol, Result
from .base import Item, OnResults, RunnerError
from .remote import KitRunner, write_kit


class OfflineRunner(KitRunner):
    """The kit as a local folder carried to the device and back."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        folder = spec.partition(":")[2]
        if not folder:
            raise RunnerError(f"runner {spec!r} names no folder; use offline:FOLDER (e.g. offline:kits/pixel7)")
        self.spec, self.folder = spec, Path(folder).expanduser()
        self.dir, self.python = str(self.folder), "python3"

    def where(self) -> str:
        return f"the offline kit {self.folder}"

    def ready(self) -> bool:
        """Whether the kit has been run on the device (it wrote ``device.json``)."""
        return (self.folder / "device.json").is_file()

    def pending(self, what: str) -> RunnerError:
        return RunnerError(f"{what} wait in the offline kit {self.folder}: copy that folder to the device, run "
                           "`python3 hwnas_kit.py run-all` in it there (needs numpy and onnxruntime), copy it back "
                           "to the same place and run the same hwnas command again")

    def _fingerprint(self, protocol: Protocol) -> dict[str, Any]:
        if not self.ready():
            raise self.pending("models")
        info = json.loads((self.folder / "device.json").read_text())
        return {k: v for k, v in info.items() if k != "kit"}

    def _argv(self, command: str) -> list[str]:
        raise self.pending("models")

    def _push(self, local: Path, remote_parent: str) -> None:
        shutil.copytree(local, Path(remote_parent) / local.name, dirs_exist_ok=True)

    def _status(self, job: str) -> dict[str, Any]:
        jdir = self.folder / "jobs" / job
        results = {}
        for f in sorted((jdir / "results").glob("*.json")):
            try:
                results[f.stem] = json.loads(f.read_text())
            except ValueError:
                continue
        models = sorted(p.name for p in (jdir / "models").glob("*")) if (jdir / "models").is_dir() else []
        try:
            shapes = {m["file"]: m["input_shape"] for m in json.loads((jdir / "job.json").read_text())["models"]}
        except (OSError, ValueError, KeyError):
            shapes = {}
        return {"models": models, "results": results, "shapes": shapes}

    def _run(self, job: str, names: set[str], on_row: Any) -> tuple[int, str]:
        raise self.pending(f"{len(names)} models (job {job})")

    def stage(self, items: Sequence[Item], protocol: Protocol, *, job: str, batch: int = 8) -> None:
        write_kit(self.folder)
        (self.folder / "jobs").mkdir(exist_ok=True)
        status = self._status(job)
        have = {f: status["shapes"][f] for f in status["models"] if f in status["shapes"]}
        done = {r.get("name") for r in status["results"].values()}
        todo = [(n, b) for n, b in items if n not in done]
        if todo:
            self._stage(todo, protocol, job, batch, have, self.folder / "jobs")

    def measure(self, items: Sequence[Item], protocol: Protocol, *, job: str, batch: int = 8,
                on_results: OnResults | None = None) -> dict[str, Result]:
        if not self.ready():
            self.stage(items, protocol, job=job, batch=batch)
            raise self.pending(f"{len(items)} models (job {job})")
        return super().measure(items, protocol, job=job, batch=batch, on_results=on_results)
