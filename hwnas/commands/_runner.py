"""``hwnas profile --runner R``: the flags and the command that time a whole table on another device."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import HwnasError

RUNNER_EPILOG = """\
On a device (units, calibration and held-out validation networks all timed there; resumable):
  hwnas profile --space seed-cnn --runner ssh://pi@192.168.1.20 --device rpi4-1t
  hwnas profile --space mbconv --runner 'ssh://me@board:2222?python=/usr/bin/python3&dir=/tmp/hwnas-kit&identity=~/.ssh/board' --device board-1t --ep xnnpack --pin-core 3
  hwnas profile --space mbconv --runner adb:R58M123ABC --device pixel7-1t        # onnxruntime_perf_test on the phone
  hwnas profile --space mbconv --runner offline:kits/pixel7 --device pixel7-1t   # air-gapped: carry kits/pixel7 there and back"""


def add_runner_flags(p: argparse.ArgumentParser) -> None:
    """``--runner``, ``--ep``, ``--pin-core``, ``--ssh-option`` and the calibration/validation sizes."""
    from ..latency.runners import EPS

    p.add_argument("--runner", default=None, metavar="R",
                   help="time on another device and also calibrate and validate the table there: local, "
                        "ssh://user@host[:port][?python=..&dir=..&identity=..&known_hosts=..&strict=..], "
                        "adb[:SERIAL][?bin=..|python=..], offline:FOLDER (default: this host, units only)")
    p.add_argument("--ep", choices=sorted(EPS), default=None,
                   help="onnxruntime execution provider on the device (default cpu); refused with the list of "
                        "available ones when the device's onnxruntime lacks it")
    p.add_argument("--pin-core", type=int, default=None, metavar="N",
                   help="pin the measuring thread to core N (sched_setaffinity / taskset on the device)")
    p.add_argument("--ssh-option", action="append", default=[], metavar="NAME=VALUE",
                   help="extra `ssh -o` option for an ssh:// runner (repeatable)")
    p.add_argument("--calibrate-samples", type=int, default=64, metavar="N",
                   help="with --runner: calibration networks timed on the device (default 64; 0: none)")
    p.add_argument("--validate-samples", type=int, default=200, metavar="N",
                   help="with --runner: held-out validation networks timed on the device (default 200; 0: none)")


def check_local_provider(protocol) -> None:
    """The one-line error naming this host's providers when ``--ep`` asks for one it lacks."""
    import onnxruntime as ort

    from ..latency.runners import check_provider

    check_provider(protocol.provider, ort.get_available_providers(), "this host")


def run_profile_on(args: argparse.Namespace, space, device: str, out, protocol) -> int:
    """Profile, calibrate and validate ``space`` on the ``--runner`` device; prints the validation table."""
    from ..latency.runners import get_runner
    from ..latency.runners.pipeline import profile_on_device, validation_path
    from .latency import print_report

    if args.if_missing:
        raise HwnasError("--if-missing checks this host's tables; drop it with --runner (a --runner profile "
                         "resumes by itself)")
    if args.runner != "local" and not args.device:
        raise HwnasError(f"--runner {args.runner} needs --device NAME for the table (e.g. --device rpi4-1t)")
    for name in ("calibrate_samples", "validate_samples"):
        if getattr(args, name) < 0 or 0 < getattr(args, name) < 3:
            raise HwnasError(f"--{name.replace('_', '-')} must be 0 or >= 3, got {getattr(args, name)}")
    runner = get_runner(args.runner, args.ssh_option)
    start = time.monotonic()
    table, block, report = profile_on_device(
        runner, space, out, device, protocol, batch=args.batch, limit=args.limit, calibrate=args.calibrate_samples,
        validate=args.validate_samples, progress=not args.no_progress, precision=args.precision)
    left = len(table.missing(space))
    where = f"{table.device.get('cpu_model')} via {runner.where()}"
    if left or table.overhead_ms is None:
        print(f"wrote {out}: {len(table.entries)} units on {where} ({left} left; run the same command again)")
        return 0
    print(f"wrote {out}: {len(table.entries)} units on {where}, overhead {table.overhead_ms:.4f} ms")
    if block:
        print(f"calibrated on {block['n_samples']} networks timed there: leave-one-out MAPE {block['loo_mape']:.2f}%")
    if report:
        print_report(report)
        print(f"wrote {validation_path(out)}")
    print(f"done in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return 0
