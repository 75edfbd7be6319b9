"""Is a latency table this machine's? The host fingerprint, its comparison with a table, and a quick probe.

A table records under ``device`` the fingerprint of the host it was measured on (``host_info`` in
``protocol.py``): CPU model, ISA flags, cache sizes, logical cores, machine, onnxruntime version,
execution provider, threads and optimisation level. ``mismatches`` lists what differs from this host;
``probe`` then times a few reference networks of the space end to end and compares them with the
table's calibrated prediction, because two hosts with the same fingerprint (a VM's "AMD EPYC") can still
run at different speeds.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .protocol import ISA_FLAGS, Protocol, cache_sizes, cpu_model, host_info, isa_flags

if TYPE_CHECKING:
    from ..space import Arch, SearchSpace
    from .model import LatencyModel
    from .table import LatencyTable

TOLERANCE = 0.10  # a probe passes when every reference network is within this share of the prediction
# An uncalibrated table (``hwnas profile`` output before ``hwnas latency calibrate``) predicts end-to-end
# latency only to ~25-40% on small networks, in both directions (boundary costs it cannot know, overhead
# it over-counts), so its probe only checks the bracket every network falls in: from
# (1 - UNCALIBRATED_TOLERANCE) x the overhead-corrected sum up to (1 + tolerance) x the plain additive sum
# (every unit alone paid the per-call overhead and its boundary costs).
UNCALIBRATED_TOLERANCE = 0.30
PROBE_LIMITS = {"runs": 50, "trials": 3, "warmup_runs": 10, "warmup_s": 0.05, "max_remeasure": 1}
PROBE_ATTEMPTS = 4  # measurements of a reference network at most (a too-slow one may be contention)
PROBE_WAIT_S = 0.5  # pause before the 2nd measurement, doubled before each further one (co-tenants' bursts)
_CANDIDATES = 256  # archs drawn (seeded) to pick the middle reference of a space too large to enumerate

# fields compared only when the table recorded them (tables written before they were part of the fingerprint)
_OPTIONAL = ("machine", "cpu_count", "onnxruntime")


def host_fingerprint(protocol: Protocol | None = None) -> dict[str, Any]:
    """This host's fingerprint under ``protocol``: ``cpu_model``, ``isa``, ``cache`` (``{"L1d", "L2", "L3"}``
    in bytes; empty when unreadable), ``cpu_count`` (logical cores), ``machine``, ``onnxruntime``,
    ``provider``, ``threads``, ``opt_level`` (plus the rest of ``host_info``: system, python, numpy)."""
    return host_info(protocol or Protocol())


def _kib(sizes: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v // 1024 if isinstance(v, int) else v} KiB" for k, v in sorted(sizes.items())) or "none"


def mismatches(table: LatencyTable, threads: int = 1, opt_level: str | None = None,
               here: dict[str, Any] | None = None) -> list[str]:
    """Reasons why ``table`` was not measured on this host with these settings (empty list: it was).

    Always compared: CPU model, ISA flags (the subset that selects onnxruntime kernels) and threads.
    Compared when the table recorded them: cache sizes, logical cores, machine, onnxruntime version,
    execution provider (must be available here) and, when ``opt_level`` is given, the optimisation level.

    Args:
        table: the table (its ``device`` block and ``protocol``).
        threads: the thread count the predictions will be used with.
        opt_level: the optimisation level they will be used with (None: not compared).
        here: the fingerprint to compare with (default this host's; a runner passes its device's).
    """
    import onnxruntime as ort

    dev, proto = table.device, table.protocol
    available = here.get("providers") or [] if here is not None else ort.get_available_providers()
    here = here if here is not None else host_fingerprint(Protocol(threads=threads))
    out = []
    if dev.get("cpu_model") != here["cpu_model"]:
        out.append(f"measured on CPU {dev.get('cpu_model')!r}, this machine is {here['cpu_model']!r}")
    isa = sorted(set(dev.get("isa") or []) & ISA_FLAGS)
    if isa != here["isa"]:
        out.append(f"measured on ISA {isa}, this machine has {here['isa']}")
    t_threads = proto.get("threads", dev.get("threads"))
    if t_threads != threads:
        out.append(f"measured with {t_threads} thread(s), used with {threads}")
    cache = dev.get("cache")
    if cache and here["cache"] and cache != here["cache"]:
        out.append(f"measured with caches {_kib(cache)}, this machine has {_kib(here['cache'])}")
    names = {"machine": "machine", "cpu_count": "logical cores", "onnxruntime": "onnxruntime"}
    for key in _OPTIONAL:
        if dev.get(key) is not None and dev[key] != here[key]:
            out.append(f"measured with {names[key]} {dev[key]}, this machine has {here[key]}")
    provider = proto.get("provider") or dev.get("provider")
    if provider and provider not in available:
        out.append(f"measured with execution provider {provider}, not available here")
    t_opt = proto.get("opt_level") or dev.get("opt_level")
    if opt_level is not None and t_opt and t_opt != opt_level:
        out.append(f"measured with optimisation level {t_opt!r}, used with {opt_level!r}")
    return out


# ---- probe -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeResult:
    """A probe of a table on this host.

    ``refs``: one dict per reference network (``role`` smallest|middle|largest, ``arch_id``,
    ``predicted_ms``, ``measured_ms``, ``ratio`` = measured / predicted, ``spread``, ``attempts``);
    ``low_ms``, ``high_ms`` (the accepted range), ``attempts``; ``passed`` when every measurement is in its
    range: ``(1 +- tolerance) x predicted`` for a calibrated table, ``(1 - UNCALIBRATED_TOLERANCE) x
    predicted`` to ``(1 + tolerance) x additive`` for an uncalibrated one (``calibrated`` False);
    ``date`` (UTC), ``seconds`` it took.
    """

    passed: bool
    tolerance: float
    refs: tuple[dict[str, Any], ...]
    date: str
    seconds: float
    calibrated: bool = True
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def ratios(self) -> dict[str, float]:
        return {r["role"]: r["ratio"] for r in self.refs}

    def summary(self) -> str:
        """``smallest 1.01, middle 0.99, largest 1.00 (tolerance 10%)``."""
        if self.calibrated:
            rule = f"tolerance {100 * self.tolerance:g}%"
        else:
            rule = (f"uncalibrated table: from {1 - max(self.tolerance, UNCALIBRATED_TOLERANCE):g} x predicted to "
                    f"{1 + self.tolerance:g} x the additive sum")
        return ", ".join(f"{r['role']} {r['ratio']:.2f}" for r in self.refs) + f" (measured / predicted, {rule})"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"refs": [dict(r) for r in self.refs]}


def probe_protocol(table: LatencyTable) -> Protocol:
    """The table's protocol with few runs (``PROBE_LIMITS``): a probe of three networks takes a few seconds."""
    base = Protocol.from_dict(table.protocol)
    return dataclasses.replace(base, **{k: min(getattr(base, k), v) for k, v in PROBE_LIMITS.items()})


def reference_archs(model: LatencyModel) -> list[tuple[str, Arch]]:
    """The probe's reference networks, chosen deterministically: the fastest and the slowest predicted
    arch (exact) and the arch whose prediction is nearest the middle of that range (among every arch of a
    small space, else among ``_CANDIDATES`` seeded draws; ties broken by arch id)."""
    from .validate import ENUMERATE_LIMIT

    space = model.space
    (lo, p_lo), (hi, p_hi) = model.min_latency(), model.max_latency()
    if space.size <= ENUMERATE_LIMIT:
        cands = list(space.enumerate())
    else:
        rng = random.Random(0)
        cands = [space.sample(rng) for _ in range(_CANDIDATES)]
    mid_ms = (p_lo + p_hi) / 2
    mid = min(cands, key=lambda a: (abs(model.predict(a) - mid_ms), space.arch_id(a)))
    return [("smallest", lo), ("middle", mid), ("largest", hi)]


_PROBED: dict[tuple, ProbeResult] = {}  # probes of this process: (content hash, fingerprint, ...) -> result
PROBE_TTL_S = 24 * 3600  # a passing probe on disk is trusted this long (then measured again)


def probe_cache_file() -> Path | None:
    """Where passing probes are remembered across processes (so every shard of a sweep need not probe
    while others train): ``$HWNAS_PROBE_CACHE`` (empty or ``0``: nowhere), else
    ``${XDG_CACHE_HOME:-~/.cache}/hwnas/probes.json``."""
    env = os.environ.get("HWNAS_PROBE_CACHE")
    if env is not None:
        return None if env in ("", "0") else Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hwnas" / "probes.json"


def _disk_key(key: tuple) -> str:
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]


def _read_cache(file: Path) -> dict[str, Any]:
    try:
        obj = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _from_disk(key: tuple) -> ProbeResult | None:
    file = probe_cache_file()
    entry = _read_cache(file).get(_disk_key(key)) if file is not None else None
    if not isinstance(entry, dict) or time.time() - entry.get("saved", 0) > PROBE_TTL_S:
        return None
    try:
        r = entry["result"]
        return ProbeResult(True, r["tolerance"], tuple(r["refs"]), r["date"], r["seconds"], r["calibrated"],
                           r.get("protocol", {}))
    except (KeyError, TypeError):
        return None


def _to_disk(key: tuple, result: ProbeResult, path: str | Path) -> None:
    """Remember a passing probe (best effort: an unwritable cache only costs a probe later)."""
    file = probe_cache_file()
    if file is None:
        return
    cache = _read_cache(file)
    now_s = time.time()
    cache = {k: v for k, v in cache.items() if isinstance(v, dict) and now_s - v.get("saved", 0) <= PROBE_TTL_S}
    cache[_disk_key(key)] = {"saved": now_s, "table": str(path), "sha256": key[0], "result": result.to_dict()}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, file)
    except OSError:
        pass


def _cache_key(path: str | Path | None, table: LatencyTable, protocol: Protocol, tolerance: float) -> tuple | None:
    """What a probe's verdict depends on: the table's bytes (not its path, so a copy of a probed table, such
    as a wheel's or a Ray job's working_dir, is known too; an edited one is not), this host's fingerprint,
    the probe protocol and the tolerance."""
    if path is None:
        return None
    try:
        content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None
    finger = json.dumps(host_fingerprint(protocol), sort_keys=True, default=str)
    return (content, finger, json.dumps(protocol.to_dict(), sort_keys=True), tolerance)


def probe(table: LatencyTable, space: SearchSpace, protocol: Protocol | None = None, *,
          tolerance: float = TOLERANCE, path: str | Path | None = None,
          measure: Any = None, fresh: bool = False) -> ProbeResult:
    """Time the reference networks of ``space`` end to end and compare them with the table's prediction.

    Each reference is measured with ``protocol`` (default ``probe_protocol(table)``: the table's protocol
    with few runs); one whose ratio is off is measured again after a pause and the fastest time kept
    (contention only ever slows a network down, so the fastest time is the quietest): once, and while it
    is still too slow, up to ``PROBE_ATTEMPTS`` measurements in all, the pause doubling each time.

    Args:
        table: a complete table of ``space``.
        space: the search space.
        protocol: timing knobs of the probe.
        tolerance: pass when every ``measured / predicted`` is within ``1 +- tolerance`` (an uncalibrated
            table: see ``ProbeResult``).
        path: the table's file; the probe is remembered per table content (its bytes) + fingerprint + probe protocol
            for this process, and a passing one for ``PROBE_TTL_S`` in ``probe_cache_file()`` for every
            process (``fresh`` probes again).
        measure: ``calibrate.measure_archs``-compatible function (tests may pass a fake).

    Returns:
        The ``ProbeResult`` (ratios per reference, pass/fail, date, seconds).

    Raises:
        TableError: the table lacks a unit of the space.
    """
    from .calibrate import measure_archs
    from .model import LatencyModel
    from .table import now

    protocol = protocol or probe_protocol(table)
    model = LatencyModel(space, table)
    key = None if measure is not None else _cache_key(path, table, protocol, tolerance)  # fakes: never cached
    if key is not None and not fresh:
        if key in _PROBED:
            return _PROBED[key]
        if (known := _from_disk(key)) is not None:
            _PROBED[key] = known
            return known
    if measure is None:  # an int8 table's predictions are about int8 networks: time those
        measure = (measure_archs if table.precision == "fp32"
                   else functools.partial(measure_archs, precision=table.precision))
    start = time.monotonic()
    refs = reference_archs(model)
    pred = [model.predict(a) for _, a in refs]
    if model.calibrated:
        bounds = [((1 - tolerance) * p, (1 + tolerance) * p) for p in pred]
    else:
        bounds = [((1 - max(tolerance, UNCALIBRATED_TOLERANCE)) * p, (1 + tolerance) * max(p, model.additive(a)))
                  for p, (_, a) in zip(pred, refs, strict=True)]
    meas = list(measure(space, [a for _, a in refs], protocol, progress=False, desc="probe"))
    attempts = [1] * len(refs)

    def off(i: int) -> bool:
        return not (pred[i] > 0 and bounds[i][0] <= meas[i] <= bounds[i][1])

    for attempt in range(2, PROBE_ATTEMPTS + 1):
        again = [i for i in range(len(refs)) if off(i) and (attempt == 2 or meas[i] > bounds[i][1])]
        if not again:
            break
        time.sleep(PROBE_WAIT_S * 2 ** (attempt - 2))
        for i, ms in zip(again, measure(space, [refs[i][1] for i in again], protocol, progress=False,
                                        desc="probe"), strict=True):
            meas[i], attempts[i] = min(meas[i], ms), attempt
    rows = tuple({"role": role, "arch_id": space.arch_id(a), "predicted_ms": p, "measured_ms": m,
                  "ratio": m / p if p > 0 else float("inf"), "low_ms": lo, "high_ms": hi, "attempts": n}
                 for (role, a), p, m, n, (lo, hi) in zip(refs, pred, meas, attempts, bounds, strict=True))
    result = ProbeResult(not any(off(i) for i in range(len(refs))), tolerance, rows, now(),
                         round(time.monotonic() - start, 3), model.calibrated, protocol.to_dict())
    if key is not None:
        _PROBED[key] = result
        if result.passed:
            _to_disk(key, result, path)
    return result


__all__ = ["PROBE_LIMITS", "PROBE_TTL_S", "TOLERANCE", "UNCALIBRATED_TOLERANCE", "ProbeResult", "cache_sizes", "cpu_model",
           "host_fingerprint", "isa_flags", "mismatches", "probe", "probe_cache_file", "probe_protocol",
           "reference_archs"]
