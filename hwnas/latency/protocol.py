"""The onnxruntime timing protocol (DESIGN section 5), standalone: stdlib, numpy and onnxruntime only.

This one file serves two purposes, so the protocol exists once:

* ``hwnas.latency`` imports it to time models in-process (``profile``, calibration, validation);
* ``hwnas devicekit export`` copies it verbatim as ``run_kit.py`` into a device kit, where ``main()``
  times every ONNX file of the kit on a phone or board that has only Python, numpy and onnxruntime.

Protocol, per model and trial: a fresh ``InferenceSession`` (``intra_op_num_threads`` = threads,
``inter_op_num_threads`` = 1, ``ORT_SEQUENTIAL``, the recorded optimisation level), a preallocated,
page-aligned batch-1 input of fixed shape (numpy's 16-byte alignment made sessions differ by up to 10%),
warm-up until both ``warmup_runs`` calls and ``warmup_s`` seconds have passed, then ``runs`` calls each
timed with ``time.perf_counter_ns``; the trial's statistic is the median.
Trials run round-robin across the models of a batch (A B C A B C ...). Across trials, ``aggregate``:

* ``median`` (DESIGN default): latency = median of the trial medians, spread = ``(max - min) / median``
  of them; a model whose spread exceeds ``max_spread`` is measured again (K fresh trials, up to
  ``max_remeasure`` times) and the calmest set of trials is kept.
* ``min``: latency = smallest trial median, spread = relative gap between the two smallest; a model
  whose gap exceeds ``max_spread`` gets K more trials, pooled. For shared machines whose co-tenants
  switch the core between a quiet and a slowed state for seconds at a time: the trial medians are then
  bimodal and their median flips between the states, while the quiet state, once seen twice, is stable.

Do not import hwnas (or torch) here: the kit runner must work without them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType

import numpy as np
import onnxruntime as ort

KIT_VERSION = 1
INPUT = "float32 N(0,1), seed 0, allocated once per session, 4096-byte aligned"
OPT_LEVELS = MappingProxyType({
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
})
# ISA extensions that change which onnxruntime (MLAS) kernels run; a table is only valid for its set.
ISA_FLAGS = frozenset({
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "asimddp", "asimdhp", "i8mm", "sve", "sve2", "bf16", "neon",
})


def _median_of_medians(trials: Sequence[float]) -> tuple[float, float]:
    med = statistics.median(trials)
    return med, ((max(trials) - min(trials)) / med if med > 0 else 0.0)


def _min_of_medians(trials: Sequence[float]) -> tuple[float, float]:
    low = sorted(trials)[:2]
    return low[0], ((low[-1] - low[0]) / low[0] if low[0] > 0 else 0.0)


# aggregate name -> (trial medians -> (latency, spread)), and whether re-measured trials are pooled
AGGREGATES = MappingProxyType({"median": (_median_of_medians, False), "min": (_min_of_medians, True)})


class ProtocolError(ValueError):
    """A protocol setting that cannot work (hwnas turns it into a one-line message)."""


@dataclass(frozen=True)
class Protocol:
    """Knobs of the timing protocol. Defaults follow DESIGN section 5; tests pass small values.

    Args:
        runs: timed calls per trial (>= 200 for real tables).
        trials: round-robin trials per model (K); their medians are combined by ``aggregate``.
        warmup_runs: minimum warm-up calls per trial.
        warmup_s: minimum warm-up seconds per trial.
        max_spread: re-measure a model whose spread of trial medians exceeds this (see ``aggregate``).
        max_remeasure: how many times a noisy model is measured again at most.
        threads: ``intra_op_num_threads`` (the table is valid only for this count).
        opt_level: one of ``OPT_LEVELS`` (deployment level ``all`` = ``ORT_ENABLE_ALL``).
        provider: onnxruntime execution provider.
        aggregate: how trial medians combine, one of ``AGGREGATES`` (see the module docstring).
        pin_core: the core the measuring thread is pinned to (None: the idlest core on this host, no pinning
            on a device).
    """

    runs: int = 200
    trials: int = 5
    warmup_runs: int = 20
    warmup_s: float = 0.3
    max_spread: float = 0.02
    max_remeasure: int = 2
    threads: int = 1
    opt_level: str = "all"
    provider: str = "CPUExecutionProvider"
    aggregate: str = "median"
    pin_core: int | None = None

    def __post_init__(self) -> None:
        if self.pin_core is not None and (not isinstance(self.pin_core, int) or self.pin_core < 0):
            raise ProtocolError(f"protocol pin_core must be a core number >= 0, got {self.pin_core!r}")
        for name in ("runs", "trials", "threads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ProtocolError(f"protocol {name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.warmup_runs < 0 or self.warmup_s < 0 or self.max_remeasure < 0 or self.max_spread <= 0:
            raise ProtocolError("protocol warmup_runs, warmup_s and max_remeasure must be >= 0 and "
                                "max_spread > 0")
        if self.opt_level not in OPT_LEVELS:
            raise ProtocolError(f"unknown optimisation level {self.opt_level!r}; use one of {sorted(OPT_LEVELS)}")
        if self.aggregate not in AGGREGATES:
            raise ProtocolError(f"unknown aggregate {self.aggregate!r}; use one of {sorted(AGGREGATES)}")

    def to_dict(self) -> dict:
        """Plain dict plus the fixed settings, for provenance."""
        return {**asdict(self), "inter_op_threads": 1, "execution_mode": "ORT_SEQUENTIAL", "batch": 1,
                "graph_optimization_level": OPT_LEVELS[self.opt_level], "input": INPUT,
                "statistic": f"{self.aggregate} over trials of the per-trial median"}

    @classmethod
    def from_dict(cls, d: dict) -> Protocol:
        """Inverse of ``to_dict`` (extra provenance keys are ignored)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class Model:
    """A model to time: ``name``, serialized ONNX ``onnx`` (or ORT-format bytes) and its fixed input shape
    (batch included); ``config``: session config entries its sessions need (e.g. a ``.ort`` with saved
    runtime optimisations replays them only with ``session.enable_saved_runtime_optimizations`` = 1)."""

    name: str
    onnx: bytes
    input_shape: tuple[int, ...]
    config: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Result:
    """Latency of one model: median of trial medians (ms), spread of the trial medians, the trials."""

    median_ms: float
    spread: float
    trial_ms: tuple[float, ...] = field(default=())
    remeasured: int = 0


# ---- host provenance ---------------------------------------------------------------------------------
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                info.setdefault(key.strip().lower(), val.strip())
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """Human-readable CPU model (``/proc/cpuinfo`` model name, else ``platform.processor()``)."""
    info = _cpuinfo()
    for key in ("model name", "hardware", "processor", "cpu model"):
        if info.get(key) and not info[key].isdigit():
            return info[key]
    return platform.processor() or platform.machine() or "unknown"


def isa_flags() -> list[str]:
    """Sorted ISA extensions of this CPU that matter to onnxruntime kernels (subset of ``ISA_FLAGS``)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("features") or "").split())
    if platform.machine().lower() in ("arm64", "aarch64") and not flags:
        flags = {"neon"}
    return sorted(flags & ISA_FLAGS)


def _size_bytes(text: str) -> int | None:
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    return int(digits) * mult if digits.isdigit() else None


def cache_sizes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> dict[str, int]:
    """Data/unified cache sizes of CPU 0 in bytes, e.g. ``{"L1d": 32768, "L2": 1048576, "L3": 33554432}``.

    Read from ``<root>/index*/{level,type,size}``; empty when unreadable (macOS, some containers, phones).
    """
    out: dict[str, int] = {}
    try:
        names = sorted(n for n in os.listdir(root) if n.startswith("index"))
    except OSError:
        return out
    for name in names:
        try:
            vals = {}
            for key in ("level", "type", "size"):
                with open(os.path.join(root, name, key)) as f:
                    vals[key] = f.read().strip()
        except OSError:
            continue
        size = _size_bytes(vals["size"])
        if vals["type"] == "Instruction" or size is None:
            continue
        out[f"L{vals['level']}" + ("d" if vals["type"] == "Data" else "")] = size
    return out


def host_info(protocol: Protocol) -> dict:
    """Provenance of this machine and runtime for a table or a kit results file."""
    return {"cpu_model": cpu_model(), "isa": isa_flags(), "cache": cache_sizes(), "machine": platform.machine(),
            "system": platform.system(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": ort.__version__, "provider": protocol.provider,
            "threads": protocol.threads, "opt_level": protocol.opt_level}


# ---- timing ------------------------------------------------------------------------------------------
def new_session(onnx: bytes, protocol: Protocol, config: Sequence[tuple[str, str]] = ()) -> ort.InferenceSession:
    """A fresh session with the protocol's threads, sequential execution and optimisation level (plus the
    session config entries ``config``)."""
    so = ort.SessionOptions()
    for key, value in config:
        so.add_session_config_entry(key, value)
    so.intra_op_num_threads = protocol.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[protocol.opt_level])
    so.log_severity_level = 3
    return ort.InferenceSession(onnx, so, providers=[protocol.provider])


def aligned_input(shape: Sequence[int], align: int = 4096) -> np.ndarray:
    """A float32 array of ``shape`` whose data starts on an ``align``-byte boundary, filled with N(0, 1).

    numpy only guarantees 16-byte alignment, so the address of a fresh input (and with it the speed of
    the first vector loads) would change from session to session; onnxruntime's own buffers are aligned.
    """
    n = int(np.prod(shape))
    raw = np.empty(n * 4 + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    x = raw[start:start + n * 4].view(np.float32).reshape(shape)
    x[...] = np.random.default_rng(0).standard_normal(shape)
    return x


def time_trial(model: Model, protocol: Protocol) -> float:
    """One trial: fresh session, warm-up, ``runs`` timed calls. Returns the median call time in ms."""
    sess = new_session(model.onnx, protocol, model.config)
    inp = sess.get_inputs()[0]
    x = aligned_input(model.input_shape)  # preallocated, page-aligned
    feed = {inp.name: x}
    outs = [o.name for o in sess.get_outputs()]
    run, clock = sess.run, time.perf_counter_ns
    start, n = clock(), 0
    while n < protocol.warmup_runs or clock() - start < protocol.warmup_s * 1e9:
        run(outs, feed)
        n += 1
    times = [0] * protocol.runs
    for i in range(protocol.runs):
        t0 = clock()
        run(outs, feed)
        times[i] = clock() - t0
    return statistics.median(times) / 1e6


def measure_models(models: Sequence[Model], protocol: Protocol) -> list[Result]:
    """Time a batch of models round-robin (``trials`` rounds of A B C ...), re-measuring noisy ones.

    Args:
        models: the batch; each gets a fresh session per trial.
        protocol: the timing knobs (``aggregate`` combines the trial medians).

    Returns:
        One ``Result`` per model, in order: ``median_ms`` = aggregate over trials of the per-trial median.
    """
    combine, pool = AGGREGATES[protocol.aggregate]

    def trials_for(idx: Sequence[int]) -> dict[int, list[float]]:
        out: dict[int, list[float]] = {i: [] for i in idx}
        for _ in range(protocol.trials):
            for i in idx:
                out[i].append(time_trial(models[i], protocol))
        return out

    sets = trials_for(range(len(models)))
    results = [Result(*combine(sets[i]), tuple(sets[i])) for i in range(len(models))]
    for round_ in range(1, protocol.max_remeasure + 1):
        noisy = [i for i, r in enumerate(results) if r.spread > protocol.max_spread]
        if not noisy:
            break
        for i, fresh in trials_for(noisy).items():
            trials = (*results[i].trial_ms, *fresh) if pool else tuple(fresh)
            cand = Result(*combine(trials), trials, round_)
            keep = cand if pool or cand.spread < results[i].spread else results[i]
            results[i] = Result(keep.median_ms, keep.spread, keep.trial_ms, round_)
    return results


# ---- device kit runner (``run_kit.py``) ---------------------------------------------------------------
def _atomic_write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_kit(kit_dir: str, out: str, protocol: Protocol, batch: int = 8,
            progress: Callable[[int, int], None] | None = None) -> dict:
    """Time every model of a device kit and write the results file (resumable, saved after each batch).

    Args:
        kit_dir: folder with ``manifest.json``, ``identity.onnx`` and the unit ONNX files.
        out: results JSON path; an existing results file of the same kit is continued.
        protocol: the timing knobs (the manifest's protocol unless overridden).
        batch: models per round-robin batch.
        progress: called with (done, total) after each batch.

    Returns:
        The results dict: ``kit_version``, ``space``, ``space_hash``, ``device`` provenance, ``protocol``,
        ``overhead_ms``, ``entries`` (unit key -> {median_ms, spread}).
    """
    with open(os.path.join(kit_dir, "manifest.json")) as f:
        manifest = json.load(f)
    if manifest.get("kit_version") != KIT_VERSION:
        raise SystemExit(f"run_kit.py: manifest kit version {manifest.get('kit_version')} != runner {KIT_VERSION}; "
                         "use the run_kit.py exported with this kit")
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")  # noqa: UP017 (Python < 3.11)
    res = {"kit_version": KIT_VERSION, "space": manifest["space"], "space_hash": manifest["space_hash"],
           "device": host_info(protocol), "protocol": protocol.to_dict(), "entries": {}, "date": date}
    if os.path.exists(out):
        with open(out) as f:
            old = json.load(f)
        if old.get("space_hash") == res["space_hash"] and old.get("protocol") == res["protocol"]:
            res["entries"], res["overhead_ms"] = old.get("entries", {}), old.get("overhead_ms")
    shape = tuple(manifest["identity"]["input_shape"])
    if res.get("overhead_ms") is None:
        with open(os.path.join(kit_dir, manifest["identity"]["file"]), "rb") as f:
            ident = Model("identity", f.read(), shape)
        r = measure_models([ident], protocol)[0]
        res["overhead_ms"], res["overhead_spread"] = r.median_ms, r.spread
        _atomic_write_json(out, res)
    todo = [(k, u) for k, u in manifest["units"].items() if k not in res["entries"]]
    total = len(manifest["units"])
    for s in range(0, len(todo), batch):
        models = []
        for key, unit in todo[s:s + batch]:
            with open(os.path.join(kit_dir, unit["file"]), "rb") as f:
                models.append(Model(key, f.read(), tuple(unit["input_shape"])))
        for m, r in zip(models, measure_models(models, protocol)):  # noqa: B905 (devices may run Python < 3.10)
            res["entries"][m.name] = {"median_ms": r.median_ms, "spread": r.spread}
        _atomic_write_json(out, res)
        if progress:
            progress(len(res["entries"]), total)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    """``python run_kit.py [--kit DIR] [--out results.json] [--runs N --trials K ...]``."""
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description="Time every unit of an hwnas device kit with onnxruntime "
                                "(needs only Python, numpy, onnxruntime). Example: python run_kit.py "
                                "--out results.json ; then on the host: hwnas devicekit import results.json "
                                "--device pixel7-1t")
    p.add_argument("--kit", default=here, help="kit folder with manifest.json (default: this script's folder)")
    p.add_argument("--out", default=None, help="results JSON (default: KIT/results.json); resumed if present")
    for name, typ in (("runs", int), ("trials", int), ("warmup-runs", int), ("warmup-s", float),
                      ("threads", int)):
        p.add_argument(f"--{name}", type=typ, default=None, help="override the manifest's protocol")
    args = p.parse_args(argv)
    with open(os.path.join(args.kit, "manifest.json")) as f:
        proto = dict(json.load(f)["protocol"])
    for name in ("runs", "trials", "warmup_runs", "warmup_s", "threads"):
        if getattr(args, name) is not None:
            proto[name] = getattr(args, name)
    out = args.out or os.path.join(args.kit, "results.json")

    def show(done: int, total: int) -> None:
        print(f"run_kit: {done}/{total} units timed", file=sys.stderr, flush=True)

    run_kit(args.kit, out, Protocol.from_dict(proto), progress=show)
    print(f"run_kit: results written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
