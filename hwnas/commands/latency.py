"""``hwnas profile`` and ``hwnas latency predict|calibrate|validate``: latency tables from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import HwnasError
from ..space import get_space
from ._common import print_json
from ._runner import RUNNER_EPILOG, add_runner_flags, check_local_provider, run_profile_on

RAW = argparse.RawDescriptionHelpFormatter


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show library warnings (e.g. a table measured on another ISA) as one ``hwnas: warning:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if not issubclass(w.category, DeprecationWarning):
            print(f"hwnas: warning: {w.message}", file=sys.stderr)


def add_protocol_flags(p: argparse.ArgumentParser, defaults: bool) -> None:
    """Timing flags; with ``defaults`` False they only override the table's recorded protocol."""
    from ..latency.protocol import AGGREGATES, Protocol

    d = Protocol() if defaults else None
    tail = "" if defaults else " (default: the table's protocol)"
    p.add_argument("--runs", type=int, default=d and d.runs, help=f"timed calls per trial{tail or ' (default 200)'}")
    p.add_argument("--trials", type=int, default=d and d.trials,
                   help=f"round-robin trials per model{tail or ' (default 5)'}")
    p.add_argument("--warmup-runs", type=int, default=d and d.warmup_runs,
                   help=f"minimum warm-up calls per trial{tail or ' (default 20)'}")
    p.add_argument("--warmup-s", type=float, default=d and d.warmup_s,
                   help=f"minimum warm-up seconds per trial{tail or ' (default 0.3)'}")
    p.add_argument("--aggregate", choices=sorted(AGGREGATES), default=d and d.aggregate,
                   help="combine trial medians by their median (DESIGN protocol) or their minimum (robust on "
                        f"machines shared with bursty co-tenants){tail or ' (default median)'}")
    p.add_argument("--batch", type=int, default=8, help="models per round-robin batch (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def protocol_from(args: argparse.Namespace, base: dict | None = None):
    """``Protocol`` from the flags, on top of a recorded protocol dict ``base`` (or the defaults)."""
    from ..latency.protocol import Protocol, ProtocolError

    changes = {k: getattr(args, k) for k in ("runs", "trials", "warmup_runs", "warmup_s", "aggregate", "threads",
                                             "pin_core") if getattr(args, k, None) is not None}
    if getattr(args, "ep", None):
        from ..latency.runners import provider_name

        changes["provider"] = provider_name(args.ep)
    try:
        proto = Protocol.from_dict(base) if base else Protocol()
        return dataclasses.replace(proto, **changes)
    except ProtocolError as err:
        raise HwnasError(str(err)) from None


def register(sub) -> None:
    from ..latency.store import TABLES_DIR, device_slug
    from ..shipped import user_tables_dir

    p = sub.add_parser("profile", help="measure every latency unit of a space into a table (resumable)",
                       formatter_class=RAW, description=f"""\
Measure every latency unit of a search space (and the per-call overhead of an Identity model) with
onnxruntime on this machine: 1 thread, sequential, ORT_ENABLE_ALL, batch 1, fresh session per trial,
warm-up, median of the timed calls, K trials round-robin. The table is saved after every batch, so an
interrupted run resumes where it stopped when run again with the same flags.

Default output: <tables>/<device>/<space>.json (device default: {device_slug()}), where <tables> is the
first folder of $HWNAS_LATENCY_TABLES, else ./{TABLES_DIR} when this folder has one (a checkout), else
this user's table folder ({user_tables_dir()}). Lookups (search, export, --if-missing) read those
folders in the same order, then the tables shipped with hwnas.
--precision int8 times every unit quantised as `hwnas export --int8` quantises a network (static QDQ,
calibrated on random tensors of the unit's input shape) into <device>/<space>.int8.json, beside the
fp32 table; `hwnas search --precision int8` uses it. Calibrate and validate it like an fp32 table:
  hwnas profile --space seed-cnn --precision int8
  hwnas latency calibrate --table latency_tables/{device_slug()}/seed-cnn.int8.json --samples 48
For a stable table pin one core and one BLAS thread:
  OMP_NUM_THREADS=1 taskset -c 1 hwnas profile --space seed-cnn --device {device_slug()}
""" + RUNNER_EPILOG)
    p.add_argument("--space", required=True, help="search space name (see `hwnas spaces`)")
    p.add_argument("--device", default=None, help="device name recorded in the table (default: CPU model slug "
                                                  f"plus thread count, e.g. {device_slug()})")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1; tables are per count)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="time fp32 models (default) or int8 QDQ models quantised as `hwnas export --int8` does "
                        "(table <space>.int8.json)")
    p.add_argument("--out", default=None, help="table path (default latency_tables/<device>/<space>.json)")
    p.add_argument("--limit", type=int, default=None, help="stop after measuring this many units (resume later)")
    add_runner_flags(p)
    p.add_argument("--if-missing", action="store_true",
                   help="keep a table of this space that is complete, has this machine's fingerprint (CPU model, "
                        "ISA flags, caches, cores, onnxruntime, threads) and passes a quick probe (3 networks timed "
                        "against its prediction), e.g. a shipped one; complete an incomplete table of this machine; "
                        "profile otherwise (into a new device folder when the default one holds a table)")
    add_protocol_flags(p, defaults=True)
    p.set_defaults(func=run_profile)

    lat = sub.add_parser("latency", help="predict, calibrate and validate with a latency table",
                         formatter_class=RAW, description="""\
Use a latency table: predict an arch's latency, calibrate the predictor on end-to-end measurements,
or validate it on held-out archs. Typical flow after `hwnas profile --space mbconv`:
  hwnas latency calibrate --table latency_tables/amd-epyc-1t/mbconv.json --samples 96
  hwnas latency validate  --table latency_tables/amd-epyc-1t/mbconv.json --samples 200 --json val.json
  hwnas latency predict   --table latency_tables/amd-epyc-1t/mbconv.json arch.json""")
    lsub = lat.add_subparsers(dest="latency_command", metavar="ACTION", required=True)

    pr = lsub.add_parser("predict", help="predicted latency (ms) of an arch file", formatter_class=RAW,
                         description="""\
Print the predicted latency of an arch (the JSON written by search/train: {"space","arch",...}) or of
a named arch SPACE:NAME (a published one, e.g. proxyless:proxylessnas-mobile).
Examples:
  hwnas latency predict --table latency_tables/amd-epyc-1t/seed-cnn.json arch.json --json
  hwnas latency predict --table pixel1-tflite/proxyless.json proxyless:proxylessnas-mobile""")
    pr.add_argument("arch", help="arch JSON file, or SPACE:NAME of a named arch")
    pr.add_argument("--table", default=None, help="latency table (default: the shipped table matching this machine)")
    pr.add_argument("--json", action="store_true", help='print {"predicted_latency_ms": ...}')
    pr.set_defaults(func=run_predict)

    im = lsub.add_parser("import", help="turn a published latency table into an hwnas table (predicted only)",
                         formatter_class=RAW, description="""\
Turn a published lookup table into an hwnas table, labelled imported: its numbers were measured by
its authors on their device, never by hwnas (source file and sha256 recorded), so it predicts for
search, derivation and export, while calibrate and validate refuse it. A unit of the space that the
file lacks is an error naming the unit. Formats: proxylessnas (ProxylessNAS's mobile_trim.yaml, Pixel 1,
TensorFlow Lite, 1 thread) for space proxyless.
Example:
  hwnas latency import --format proxylessnas mobile_trim.yaml --device pixel1-tflite --out pixel1-tflite/proxyless.json
  hwnas latency predict --table pixel1-tflite/proxyless.json proxyless:proxylessnas-mobile""")
    im.add_argument("file", help="the published table (YAML)")
    im.add_argument("--format", required=True, choices=("proxylessnas",), help="the table's format")
    im.add_argument("--device", required=True, help="device name of the table, e.g. pixel1-tflite")
    im.add_argument("--out", default=None, help="table path (default latency_tables/<device>/<space>.json)")
    im.add_argument("--force", action="store_true", help="replace an existing table at --out")
    im.set_defaults(func=run_import)

    ca = lsub.add_parser("calibrate", help="fit c0 and per-unit scales on end-to-end measurements",
                         formatter_class=RAW, description="""\
Measure N random archs end to end (same protocol as the table), fit c0 and per-unit scales
(T = c0 + sum_u a_u (LUT_u - overhead), ridge towards a_u = 1 chosen by leave-one-out) and store
them in the table (atomic rewrite). Only this host's own tables: a table of another device (its
fingerprint is not this host's, e.g. a phone table) is refused; time that device with `hwnas devicekit`.
Example:
  OMP_NUM_THREADS=1 taskset -c 1 hwnas latency calibrate --table latency_tables/amd-epyc-1t/seed-cnn.json --samples 48""")
    ca.add_argument("--table", required=True, help="complete latency table to calibrate")
    ca.add_argument("--space", default=None, help="expected space (default: the table's)")
    ca.add_argument("--samples", type=int, default=64, help="number of measured archs (default 64)")
    ca.add_argument("--seed", type=int, default=0, help="RNG seed of the calibration archs (default 0)")
    add_protocol_flags(ca, defaults=False)
    ca.set_defaults(func=run_calibrate)

    va = lsub.add_parser("validate", help="score the predictor on held-out archs measured end to end",
                         formatter_class=RAW, description="""\
Measure held-out archs end to end (half uniform, half from the middle of the latency range; another
seed than calibration) and report, side by side, the calibrated predictor, the overhead-corrected sum
and the plain additive table: MAPE, share within 5%/10%, Kendall tau, worst error, bias, constraint
precision (target = median measured latency). Only this host's own tables: a table of another device
is refused (this host's timings say nothing about it). Example:
  OMP_NUM_THREADS=1 taskset -c 1 hwnas latency validate --table latency_tables/amd-epyc-1t/mbconv.json --samples 200 --json val.json""")
    va.add_argument("--table", required=True, help="latency table to validate")
    va.add_argument("--samples", type=int, default=200, help="number of measured archs (default 200)")
    va.add_argument("--seed", type=int, default=1, help="RNG seed of the validation archs (default 1)")
    va.add_argument("--json", default=None, metavar="OUT", help="also write the full report to this JSON file")
    add_protocol_flags(va, defaults=False)
    va.set_defaults(func=run_validate)


def _if_missing(space, threads: int, device: str, out: Path, explicit_out: bool, precision: str = "fp32"
                ) -> tuple[str, Path, dict | None] | None:
    """``profile --if-missing``: None when a good table exists (kept); else ``(device, out, protocol)`` to
    profile: an incomplete table of this host is completed with its recorded protocol, otherwise a new
    table is measured, into a new device folder when ``out`` already holds a table (never overwritten)."""
    from ..latency.store import assess_table, assess_tables, default_table_path, free_device

    found = assess_tables(space.name, threads, precision=precision)
    if out.is_file() and all(f.path.resolve() != out.resolve() for f in found):
        here = assess_table(out, space, threads, precision=precision)
        if here.status != "other-space":
            found.insert(0, here)
    good = next((f for f in found if f.ok), None)
    if good is not None:
        print(f"keeping {good.path}: complete, fingerprint of this machine, probe {good.probe.summary()} (not "
              "profiling again)")
        return None
    for f in found:
        print(f"hwnas: {f.path}: {f.reason}", file=sys.stderr)
    partial = [f for f in found if f.status == "incomplete"]
    if partial:
        pick = next((f for f in partial if f.path.resolve() == out.resolve()), partial[0])
        print(f"completing {pick.path}: this machine's table, {pick.reason}; resuming with its recorded protocol")
        return pick.table.device["name"], pick.path, pick.table.protocol
    why = {"foreign": "fingerprint of another host", "probe-failed": "probe failed",
           "space-version": "another version of the space", "unreadable": "unreadable",
           "other-precision": "another precision"}
    kinds = ", ".join(dict.fromkeys(why[f.status] for f in found)) or "no table"
    if out.exists():
        if explicit_out:
            reason = next((f.reason for f in found if f.path.resolve() == out.resolve()), "cannot be used here")
            raise HwnasError(f"--if-missing: {out} holds a latency table this machine cannot use ({reason}) and "
                             "profiling would overwrite it; pass another --out or delete it")
        old, device = out, free_device(space.name, device, taken=[out], precision=precision)
        out = default_table_path(space.name, device, precision=precision)
        print(f"re-profiling {space.name} ({kinds}) into a new device folder: {out} ({old} is left as it is)")
    else:
        print(f"profiling {space.name} into {out} ({kinds} usable on this machine)")
    return device, out, None


def run_profile(args) -> int:
    from ..latency.profile import profile_space
    from ..latency.protocol import Protocol
    from ..latency.store import assess_table, default_table_path, device_slug

    space = get_space(args.space)
    device = args.device or device_slug(args.threads)
    out = Path(args.out) if args.out else default_table_path(space.name, device, precision=args.precision)
    protocol = protocol_from(args)
    if args.runner:
        return run_profile_on(args, space, device, out, protocol)
    check_local_provider(protocol)
    if args.if_missing:
        with _warnings_as_lines():
            plan = _if_missing(space, args.threads, device, out, args.out is not None, args.precision)
        if plan is None:
            return 0
        device, out, recorded = plan
        protocol = Protocol.from_dict(recorded) if recorded else protocol
    start = time.monotonic()
    with _warnings_as_lines():
        table = profile_space(space, out, device, protocol, batch=args.batch, limit=args.limit,
                              progress=not args.no_progress, precision=args.precision)
    left = len(table.missing(space))
    state = "complete" if not left else f"{left} unit(s) left; run the same command again to resume"
    print(f"wrote {out}: {len(table.entries)} units, overhead {table.overhead_ms:.4f} ms ({state}) in "
          f"{time.monotonic() - start:.0f} s")
    if args.if_missing and not left:
        with _warnings_as_lines():
            check = assess_table(out, space, args.threads, precision=args.precision)
        print(f"probe of {out}: {check.probe.summary()}" if check.probe else f"check of {out}: {check.reason}")
        if not check.ok:
            print(f"hwnas: warning: {out} will not be chosen on this machine: {check.reason}", file=sys.stderr)
    return 0


def _model(table: str | None, space):
    from ..latency.model import LatencyModel
    from ..latency.store import find_table

    path = table or find_table(space.name)
    if path is None:
        raise HwnasError(f"no shipped latency table of space {space.name!r} matches this machine; pass --table or "
                         f"measure one with `hwnas profile --space {space.name}`")
    return LatencyModel.load(path, space)


def run_predict(args) -> int:
    from ..run import read_arch

    rec = read_arch(args.arch)
    with _warnings_as_lines():
        model = _model(args.table, rec.build_space())
        ms = model.predict(rec.arch)
    if args.json:
        print_json({"predicted_latency_ms": ms})
    elif model.table.source == "imported":
        src = model.table.device.get("import", {}).get("file", "?")
        print(f"{ms:.4f} ms (predicted for {model.table.device['name']} from the imported table {src}; never "
              "measured by hwnas)")
    else:
        print(f"{ms:.4f} ms")
    return 0


def run_import(args) -> int:
    from ..latency.imported import import_table

    table, out = import_table(args.format, args.file, args.device, args.out, args.force)
    print(f"wrote {out}: {len(table.entries)} units of space {table.space} for {args.device}, imported from "
          f"{args.file} (sha256 {table.device['import']['sha256'][:12]}; predicted only, never measured by hwnas)")
    return 0


def _check_positive(**values: int) -> None:
    for k, v in values.items():
        if v < 1:
            raise HwnasError(f"--{k} must be >= 1, got {v}")


def run_calibrate(args) -> int:
    from ..latency.calibrate import calibrate_table
    from ..latency.table import read_table

    _check_positive(samples=args.samples, batch=args.batch)
    space = get_space(args.space) if args.space else None
    with _warnings_as_lines():
        proto = protocol_from(args, read_table(args.table, calibration=False).protocol)
        block = calibrate_table(args.table, args.samples, args.seed, proto, space, args.batch, not args.no_progress)
    scales = ", ".join(f"{k}={v:.3f}" for k, v in block["scales"].items())
    bounds = ", ".join(f"{k}={1000 * v:+.2f}" for k, v in block["boundary"].items())
    print(f"calibrated {args.table} on {args.samples} archs: c0={block['c0']:.4f} ms; scales {scales}; "
          f"boundary (us per 1e4 elements) {bounds}; leave-one-out MAPE {block['loo_mape']:.2f}% "
          f"(offset only {block['offset_only_loo_mape']:.2f}%)")
    return 0


def _row(name: str, m: dict) -> str:
    prec = "   n/a" if m["constraint_precision"] is None else f"{100 * m['constraint_precision']:5.1f}%"
    return (f"{name:<20} {m['mape']:6.2f}% {100 * m['within_5pct']:6.1f}% {100 * m['within_10pct']:6.1f}% "
            f"{m['kendall_tau']:6.3f} {m['max_abs_pct_err']:7.2f}% {m['bias_pct']:+7.2f}% {prec}")


def print_report(report: dict, out: Callable[[str], None] = print) -> None:
    """Side-by-side table of a ``validate_table`` report."""
    out(f"space {report['space']} ({report.get('precision', 'fp32')}), {report['n']} archs ({report['n_unique']} distinct), target "
        f"{report['target_ms']:.4f} ms")
    out(f"{'predictor':<20} {'MAPE':>7} {'<=5%':>7} {'<=10%':>7} {'tau':>6} {'worst':>8} {'bias':>8} {'prec':>6}")
    out(_row("calibrated" if report["calibrated"] else "uncalibrated", report))
    out(_row("overhead-corrected", report["overhead_corrected"]))
    out(_row("additive table", report["additive_baseline"]))


def run_validate(args) -> int:
    from ..latency.table import read_table
    from ..latency.validate import validate_table

    _check_positive(samples=args.samples, batch=args.batch)
    with _warnings_as_lines():
        proto = protocol_from(args, read_table(args.table).protocol)
        report = validate_table(args.table, args.samples, args.seed, proto, args.batch, not args.no_progress)
    print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0
