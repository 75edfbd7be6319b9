"""``hwnas devicekit export|import``: latency tables for devices that only have Python, numpy and onnxruntime."""

from __future__ import annotations

import argparse

from ..space import get_space

RAW = argparse.RawDescriptionHelpFormatter


def register(sub) -> None:
    p = sub.add_parser("devicekit", help="export a standalone kit to time units on a phone/board; import results",
                       formatter_class=RAW, description="""\
Measure a latency table on a device without torch or hwnas:
  hwnas devicekit export --space mbconv kit/          # ONNX units + manifest.json + run_kit.py
  (copy kit/ to the device)  python run_kit.py --out results.json
  hwnas devicekit import kit/results.json --device pixel7-1t""")
    dsub = p.add_subparsers(dest="devicekit_command", metavar="ACTION", required=True)

    ex = dsub.add_parser("export", help="write every unit as ONNX plus manifest.json and run_kit.py",
                         formatter_class=RAW, description="""\
Write a device kit: every latency unit of the space as a fixed-shape ONNX model (opset 17), the
Identity overhead model, manifest.json (kit version, space hash, unit key -> file, protocol) and
run_kit.py, a standalone runner that needs only Python, numpy and onnxruntime. Example:
  hwnas devicekit export --space seed-cnn kits/seed-cnn""")
    ex.add_argument("dir", help="kit folder to write (created)")
    ex.add_argument("--space", required=True, help="search space name (see `hwnas spaces`)")
    ex.add_argument("--runs", type=int, default=None, help="timed calls per trial (default 200)")
    ex.add_argument("--trials", type=int, default=None, help="round-robin trials per model (default 5)")
    ex.add_argument("--threads", type=int, default=None, help="intra-op threads on the device (default 1)")
    ex.add_argument("--aggregate", choices=("median", "min"), default=None,
                    help="combine trial medians by median (default) or minimum")
    ex.set_defaults(func=run_export)

    im = dsub.add_parser("import", help="turn a run_kit.py results file into a latency table",
                         formatter_class=RAW, description="""\
Check a results file written by run_kit.py (kit version, space hash, every unit present) and write
it as a latency table with the device's provenance. Example:
  hwnas devicekit import results.json --device pixel7-1t     # -> latency_tables/pixel7-1t/<space>.json""")
    im.add_argument("results", help="results JSON written by run_kit.py")
    im.add_argument("--device", required=True, help="device name for the table, e.g. pixel7-1t")
    im.add_argument("--out", default=None, help="table path (default latency_tables/<device>/<space>.json)")
    im.add_argument("--force", action="store_true", help="replace an existing table at the output path")
    im.set_defaults(func=run_import)


def run_export(args) -> int:
    from ..latency.devicekit import export_kit
    from .latency import protocol_from

    space = get_space(args.space)
    manifest = export_kit(space, args.dir, protocol_from(args))
    print(f"wrote device kit {manifest.parent} for space {space.name}; on the device run: "
          f"python run_kit.py --out results.json")
    return 0


def run_import(args) -> int:
    from ..latency.devicekit import import_results

    table, out = import_results(args.results, args.device, args.out, force=args.force)
    print(f"wrote {out}: {len(table.entries)} units of space {table.space} measured on {table.device['cpu_model']}")
    return 0
