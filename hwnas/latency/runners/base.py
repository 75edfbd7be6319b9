"""What every runner shares: the interface ("time these ONNX models on the target"), execution providers,
the device's fingerprint check, and the adapter that lets calibration and validation time archs there.

A runner never decides *what* is measured (``profile``, ``calibrate`` and ``validate`` do); it only
replaces "time these models with the protocol" and says which device it reached (``fingerprint``).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from ...errors import HwnasError
from ..protocol import Model, Protocol, Result

if TYPE_CHECKING:
    from ...space import Arch, SearchSpace

# --ep name -> onnxruntime provider name (and onnxruntime_perf_test's -e name)
EPS = MappingProxyType({
    "cpu": "CPUExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "qnn": "QNNExecutionProvider",
})

# a model to time, built only when the runner needs its bytes (the local runner builds batch by batch)
Item = tuple[str, Callable[[], Model]]
OnResults = Callable[[list[tuple[str, Result]]], None]


class RunnerError(HwnasError):
    """A runner that cannot reach its device, or a device that cannot run what was asked."""


def provider_name(ep: str) -> str:
    """onnxruntime provider name of an ``--ep`` value (``cpu`` -> ``CPUExecutionProvider``); full provider
    names pass through."""
    if ep in EPS.values():
        return ep
    if ep not in EPS:
        raise RunnerError(f"unknown execution provider {ep!r}; pass --ep one of {', '.join(EPS)}")
    return EPS[ep]


def check_provider(provider: str, available: Sequence[str], where: str) -> None:
    """Raise ``RunnerError`` (one line naming the available providers) when ``provider`` is not there."""
    if provider not in available:
        names = {v: k for k, v in EPS.items()}
        have = ", ".join(f"{p} (--ep {names[p]})" if p in names else p for p in available) or "none"
        raise RunnerError(f"execution provider {provider} is not in the onnxruntime of {where}; it has: {have}; "
                          "pass one of those with --ep, or install an onnxruntime build with that provider there")


def job_name(label: str, protocol: Protocol, extra: Any = None) -> str:
    """Device-side job folder: ``label`` + digest of the protocol (another protocol never reuses results)."""
    blob = json.dumps([protocol.to_dict(), extra], sort_keys=True, default=str).encode()
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)
    return f"{safe}-{hashlib.sha256(blob).hexdigest()[:10]}"


def file_stem(name: str) -> str:
    """Device-side file stem of a model name (unit keys hold characters no file system should see)."""
    return hashlib.sha256(name.encode()).hexdigest()[:20]


class Runner(ABC):
    """Times ONNX models on one device. Subclasses: ``local``, ``ssh``, ``adb``, ``offline``."""

    spec: str = "local"

    def __init__(self) -> None:
        self._finger: dict[str, Any] | None = None

    @abstractmethod
    def _fingerprint(self, protocol: Protocol) -> dict[str, Any]:
        """The device's own fingerprint (``host_info`` fields plus ``providers``, ``os``)."""

    def fingerprint(self, protocol: Protocol) -> dict[str, Any]:
        """The device's fingerprint (asked once per runner), with the runner that reached it; checks that the
        protocol's execution provider is there (``RunnerError`` naming the available ones otherwise)."""
        if self._finger is None:
            self._finger = {**self._fingerprint(protocol), "runner": self.spec}
        finger = dict(self._finger, provider=protocol.provider, threads=protocol.threads,
                      opt_level=protocol.opt_level)
        check_provider(protocol.provider, finger.get("providers") or [], self.where())
        return finger

    def where(self) -> str:
        """The device in words, for messages."""
        return self.spec

    @abstractmethod
    def measure(self, items: Sequence[Item], protocol: Protocol, *, job: str, batch: int = 8,
                on_results: OnResults | None = None) -> dict[str, Result]:
        """Time ``items`` round-robin in batches with ``protocol`` on the device.

        Args:
            items: ``(name, build)`` pairs; ``build()`` returns the ``Model`` (names are unique).
            protocol: the timing knobs (provider, threads, pin_core included).
            job: a stable name for this measurement (remote runners keep per-model results under it, so a
                rerun after a dropped connection measures only what has no result yet).
            batch: models per round-robin batch.
            on_results: called with ``[(name, result), ...]`` as results arrive (the caller saves them).

        Returns:
            name -> ``Result`` for every item.
        """

    def stage(self, items: Sequence[Item], protocol: Protocol, *, job: str, batch: int = 8) -> None:  # noqa: B027
        """Prepare a later measurement without running it (the offline kit writes it; others need not)."""

    def measure_archs(self, space: SearchSpace, archs: Sequence[Arch], protocol: Protocol, batch: int = 8,
                      progress: bool = True, desc: str = "measure", precision: str = "fp32") -> list[float]:
        """``calibrate.measure_archs`` on this runner's device: end-to-end latency (ms) of each arch. The job
        is named after ``desc``'s first word, the space and the archs, so a rerun resumes it."""
        items = arch_items(space, archs, precision)
        job = job_name(f"{desc.split()[0]}-{space.name}-{precision}", protocol, [n for n, _ in items])
        with tqdm(total=len(items), desc=desc, unit="arch", disable=not progress, dynamic_ncols=True) as bar:
            res = self.measure(items, protocol, job=job, batch=batch, on_results=lambda rs: bar.update(len(rs)))
        return [res[n].median_ms for n, _ in items]


def _arch_model(space: SearchSpace, arch: Arch, precision: str) -> Model:
    from ..measure import to_model

    return to_model(space.arch_id(arch), space.build(arch), space.input_shape, precision)


def arch_items(space: SearchSpace, archs: Sequence[Arch], precision: str = "fp32") -> list[Item]:
    """Items for end-to-end archs (a repeated arch is measured again, as the local path does)."""
    return [(f"{i:04d}-{space.arch_id(a)}", partial(_arch_model, space, a, precision)) for i, a in enumerate(archs)]
