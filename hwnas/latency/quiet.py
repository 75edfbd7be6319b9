"""Quiet end-to-end measurement: one core, a probe of known time around the batch, remeasure or mark noisy.

``measure_quietly(models, protocol)`` is the one path by which search and sweeps time a derived arch:

* the calling thread (onnxruntime runs a 1-thread session in it) is pinned to one core
  (``os.sched_setaffinity``; by default the allowed core idlest over 0.2 s), restored afterwards;
* a probe of known time, the Identity model (``measure.Passthrough``) whose latency is the per-call
  overhead, is timed before and after the batch; its known time is the table's ``overhead_ms`` when given,
  else the fastest probe time seen here (contention only slows);
* an attempt is *contended* when a model's trial medians spread beyond ``protocol.max_spread`` (after the
  protocol's own re-measurements), when a probe is off its known time by more than ``probe_tolerance``
  (15%), or when the thread waited on the run queue for more than ``max_wait`` of the wall time
  (``/proc/thread-self/schedstat``: another process ran on the core; time slicing leaves per-call medians
  of sub-millisecond models almost unchanged, so only this signal sees a busy loop on the same core);
* contended models are measured again after a short backoff, up to ``attempts`` times; a model never
  measured quietly is returned ``noisy`` (its fastest attempt, with its spread).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import onnxruntime as ort
from torch import nn

from .measure import Passthrough, measure_onnx, to_model
from .protocol import Model, Protocol, cpu_model

PROBE_TOLERANCE = 0.15  # a probe further than this from its known time means the core was not quiet
MAX_WAIT = 0.10  # share of wall time spent runnable but waiting for the core


@dataclass(frozen=True)
class QuietResult:
    """One model's end-to-end latency and how quiet its measurement was.

    ``probe_ratio``: the probe time furthest from its known time, divided by it (1.0 = as expected);
    ``run_queue_wait``: share of the attempt's wall time the thread waited for its core (None where the
    kernel does not say); ``attempts``: measurements taken; ``noisy``: none of them was quiet.
    """

    median_ms: float
    spread: float
    trial_ms: tuple[float, ...]
    attempts: int
    noisy: bool
    probe_ratio: float
    run_queue_wait: float | None = None
    core: int | None = None
    host: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The ``measurement`` record stored beside a ``measured_latency_ms`` (candidates, arch.json)."""
        return {"host": self.host, "median_ms": self.median_ms, "spread": round(self.spread, 5),
                "trials": [round(t, 6) for t in self.trial_ms], "attempts": self.attempts, "noisy": self.noisy,
                "probe_ratio": round(self.probe_ratio, 4),
                "run_queue_wait": None if self.run_queue_wait is None else round(self.run_queue_wait, 4),
                "core": self.core}


def host_summary() -> dict[str, Any]:
    """Short fingerprint of where a measurement was taken: CPU model, cores, onnxruntime version."""
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "onnxruntime": ort.__version__}


def _cpu_times() -> dict[int, tuple[int, int]]:
    """core -> (busy, total) jiffies from ``/proc/stat``."""
    out: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *vals = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    v = [int(x) for x in vals[:8]]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    out[int(name[3:])] = (sum(v) - idle, sum(v))
    except OSError:
        pass
    return out


def idlest_core(window_s: float = 0.2) -> int:
    """The allowed core that was idlest over ``window_s`` seconds (the highest allowed one on a tie)."""
    allowed = sorted(os.sched_getaffinity(0))
    a = _cpu_times()
    time.sleep(window_s)
    b = _cpu_times()

    def busy(c: int) -> float:
        if c not in a or c not in b or b[c][1] == a[c][1]:
            return 0.0
        return (b[c][0] - a[c][0]) / (b[c][1] - a[c][1])

    return min(reversed(allowed), key=busy)


def _run_delay_ns() -> int | None:
    """Nanoseconds this thread has spent runnable but waiting for a CPU (None without schedstat)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


@contextmanager
def pinned(core: int | None = None) -> Iterator[int]:
    """Pin the calling thread to ``core`` (default: ``idlest_core()``) for the ``with`` block, then restore
    its affinity. Long measurements (``hwnas profile``, calibration) pin once and pass the core on."""
    core = idlest_core() if core is None else core
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, saved)


def probe_protocol(protocol: Protocol) -> Protocol:
    """The probe's protocol: at least 100 runs and 10 warm-up calls, at most 3 trials and 0.05 s of
    warm-up, no re-measuring (an Identity model has nothing to warm up; 300 calls are about 2 ms of work,
    enough for a stable median even when the models themselves are timed with few runs)."""
    return dataclasses.replace(protocol, runs=max(protocol.runs, 100), warmup_runs=max(protocol.warmup_runs, 10),
                               trials=min(protocol.trials, 3), warmup_s=min(protocol.warmup_s, 0.05),
                               max_remeasure=0)


def measure_quietly(models: Sequence[Model], protocol: Protocol, *, probe_ms: float | None = None,
                    attempts: int = 3, backoff_s: float = 2.0, probe_tolerance: float = PROBE_TOLERANCE,
                    max_wait: float = MAX_WAIT, max_spread: float | None = None, core: int | None = None,
                    sleep: Callable[[float], None] | None = None) -> list[QuietResult]:
    """Time ``models`` end to end on one core, remeasuring contended ones; see the module docstring.

    Args:
        models: exported models (``protocol.Model``); the probe uses the first one's input shape.
        protocol: the timing knobs (the latency table's protocol, to compare with its predictions).
        probe_ms: known time of the probe (the table's ``overhead_ms``); None: the fastest probe seen here.
        attempts: measurements per model at most (>= 1).
        backoff_s: wait before attempt k+1 is ``k * backoff_s`` seconds.
        probe_tolerance: largest relative distance of a probe from its known time in a quiet attempt.
        max_wait: largest share of wall time spent waiting for the core in a quiet attempt.
        max_spread: largest spread of a model's trial medians in a quiet attempt (default
            ``protocol.max_spread``; ``math.inf`` when the caller records the spread itself and only
            contention should trigger a re-measurement, as ``hwnas profile`` does).
        core: the core to measure on (default: ``idlest_core()``).
        sleep: how to wait between attempts (default ``time.sleep``; tests pass a no-op).

    Returns:
        One ``QuietResult`` per model, in order.

    Raises:
        HwnasError: onnxruntime cannot run a model with these settings.
        ValueError: ``attempts`` < 1 or no models.
    """
    if attempts < 1 or not models:
        raise ValueError("measure_quietly needs at least one model and attempts >= 1")
    shape = tuple(models[0].input_shape[1:])
    sleep = sleep or time.sleep
    probe, light = to_model("probe", Passthrough(), shape), probe_protocol(protocol)
    spread_limit = protocol.max_spread if max_spread is None else max_spread
    host = host_summary()
    known = probe_ms
    best: dict[int, QuietResult] = {}
    pending = list(range(len(models)))
    with pinned(core) as core:
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                sleep(backoff_s * (attempt - 1))
            w0, t0 = _run_delay_ns(), time.perf_counter_ns()
            before = measure_onnx([probe], light)[0].median_ms
            results = measure_onnx([models[i] for i in pending], protocol)
            after = measure_onnx([probe], light)[0].median_ms
            w1, t1 = _run_delay_ns(), time.perf_counter_ns()
            if probe_ms is None:  # a fixed reference measured here: the fastest probe seen (contention only slows)
                known = min(before, after, known if known is not None else before)
            assert known is not None
            ratio = max((before / known, after / known), key=lambda r: abs(r - 1.0))
            wait = (w1 - w0) / max(t1 - t0, 1) if w0 is not None and w1 is not None else None
            calm = abs(ratio - 1.0) <= probe_tolerance and (wait is None or wait <= max_wait)
            for i, r in zip(pending, results, strict=True):
                quiet = calm and r.spread <= spread_limit
                res = QuietResult(r.median_ms, r.spread, r.trial_ms, attempt, not quiet, ratio, wait, core, host)
                old = best.get(i)
                if quiet or old is None or res.median_ms < old.median_ms:
                    best[i] = res
                else:
                    best[i] = QuietResult(**{**old.__dict__, "attempts": attempt})
            pending = [i for i in pending if best[i].noisy]
            if not pending:
                break
    return [best[i] for i in range(len(models))]


def measure_batch(models: Sequence[Model], protocol: Protocol, core: int) -> list[QuietResult]:
    """One batch of a long measurement (``hwnas profile``, calibration, validation) on the core the caller
    pinned (``pinned()``): re-measured only for contention (a probe slower than the fastest one of the
    batch, run-queue wait), at most twice after a 1 s backoff; the protocol itself already re-measures a
    wide spread, and the table records it."""
    return measure_quietly(models, protocol, attempts=3, backoff_s=1.0, max_spread=math.inf, core=core)


def measure_module_quietly(module: nn.Module, input_shape: Sequence[int], protocol: Protocol,
                           precision: str = "fp32", **kw: Any) -> QuietResult:
    """``measure_quietly`` for one plain module (``space.build(arch)``, ``space.input_shape``); ``precision``
    ``int8`` times it quantised as ``hwnas export --int8`` quantises it."""
    return measure_quietly([to_model("model", module, input_shape, precision)], protocol, **kw)[0]


# ---- provenance: which latency number a record may carry for a table's device ------------------------
def on_this_host(table: Any) -> bool:
    """Whether ``table`` (a ``LatencyTable``) was measured on this host with its own thread count, so that
    timings taken here may be recorded under its device (``fingerprint.mismatches`` is empty)."""
    from .fingerprint import mismatches

    return not mismatches(table, threads=int(table.protocol.get("threads") or 1))


def provenance(table: Any, measured: QuietResult | None) -> dict[str, Any]:
    """The latency fields of a candidate, ``arch.json`` or front entry for ``table``'s device.

    Returns:
        ``latency_source`` ("measured" with a measurement, else "predicted"), ``latency_device`` (the
        table's device name), ``latency_precision`` (``fp32`` or ``int8``: the table's, so the latencies are
        those of the fp32 or of the int8 QDQ network), ``measured_latency_ms`` (None unless measured) and, when measured,
        ``measurement`` (``QuietResult.record()``: host, median_ms, spread, trials, attempts, noisy, probe_ratio).
    """
    out: dict[str, Any] = {"latency_source": "measured" if measured is not None else "predicted",
                           "latency_device": table.device.get("name"),
                           "latency_precision": getattr(table, "precision", "fp32"),
                           "measured_latency_ms": measured.median_ms if measured is not None else None}
    if measured is not None:
        out["measurement"] = measured.record()
    return out


def measure_for(model: Any, module: nn.Module, input_shape: Sequence[int], **kw: Any) -> QuietResult | None:
    """Quietly measure ``module`` for ``model`` (a ``LatencyModel``) when its table is this host's, else None
    (a table of another device: nothing of this host may be recorded under its name). An int8 table's model
    is timed quantised, as its table's entries were."""
    if not on_this_host(model.table):
        return None
    return measure_module_quietly(module, input_shape, model.protocol, model.table.precision,
                                  probe_ms=model.table.overhead_ms or None, **kw)
