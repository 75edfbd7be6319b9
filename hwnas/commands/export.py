"""``hwnas export RUN_DIR|ARCH --out DIR``: ONNX (+ .ort, int8) of a searched arch (or of an arch file / named arch
with its ``hwnas train --save`` weights), checked, timed, with a manifest."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  hwnas export runs/digits --out exports/digits              best arch, supernet weights, model.onnx
  hwnas export runs/digits --weights w/digits.safetensors --out exp/d
                                                             weights of `hwnas train ... --save w/digits.safetensors`
  hwnas export runs/pareto --arch all --out exports/pareto   every Pareto entry into exports/pareto/<arch_id>/
  hwnas export runs/digits --ort --int8 --out exports/mobile ORT Mobile files (fp32 + int8 QDQ), compared
  hwnas export runs/digits --dynamic-batch --out exports/b   batch axis of x/y left dynamic
  an arch outside a run (any arch file `hwnas train` takes, or a named arch SPACE:NAME): train it, then
  export it with its weights:
    hwnas train my-arch.json --save w/mine.safetensors
    hwnas export my-arch.json --weights w/mine.safetensors --out exports/mine
    hwnas export proxyless:proxylessnas-mobile --weights w/pm.safetensors --out exports/pm

The folder holds model.onnx (eval mode, BatchNorm folded, input x (1|batch, C, H, W), output y = logits),
optionally model.int8.onnx and, with --ort, model.ort (+ model.int8.ort), each with its own
<stem>.required_operators.config (the .ort style, Fixed or Runtime, is the faster one on the table's
device when that is this host, else Fixed), README.md (a model card: preprocessing, labels, latency per
file and device, operators, NNAPI/CoreML readiness, Python/Android/C++ usage), and manifest.json: arch, accuracy
on the run's test split (through onnxruntime; for an arch outside a run, on the test split of the data
its --weights were trained on, else digits, with arch_source and data_source saying so), measured
latency (onnxruntime, the latency table's protocol) next to the table's prediction, parity error vs
torch and its tolerance, opset, versions and the sha256 of every file. With a table of another device
(--latency-table PHONE) the latency is that device's prediction (latency_source "predicted"); this host's own timing is kept apart (host_latency_ms)
and never compared with it. It is written to a temp folder and renamed at the end: a failed export leaves
nothing behind and keeps a previous export at --out."""


def register(sub) -> None:
    p = sub.add_parser("export", help="export a searched arch to ONNX/ORT/int8 with a checked manifest",
                       description="Export an arch of a search run (or an arch file or named arch with its "
                                   "`hwnas train --save` weights) as a plain network (ONNX), check it with the "
                                   "ONNX checker and against torch, measure its accuracy and latency with "
                                   "onnxruntime, and write a manifest.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR|ARCH",
                   help="folder of a finished `hwnas search` (arch.json or pareto.json), or an arch outside a run: "
                        "an arch JSON file or SPACE:NAME of a named arch (proxyless:proxylessnas-mobile), with "
                        "--weights")
    p.add_argument("--arch", default="best", metavar="ID|best|all",
                   help="best (default: arch.json, or the most accurate Pareto entry), an arch id, or all")
    p.add_argument("--weights", metavar="CKPT",
                   help="weights saved by `hwnas train ARCH.json --save CKPT` (default: the run's supernet weights; "
                        "required for an arch file or named arch)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--ort", action="store_true",
                   help="also write model.ort (+ model.int8.ort) and their <stem>.required_operators.config")
    p.add_argument("--int8", action="store_true",
                   help="also write model.int8.onnx (static QDQ, calibrated on training images) and time it")
    p.add_argument("--dynamic-batch", action="store_true", help="leave the batch axis dynamic (default: 1)")
    p.add_argument("--latency-table", metavar="PATH",
                   help="table for the predicted latency (default: the shipped table matching this CPU)")
    p.add_argument("--out", required=True, metavar="DIR", help="export folder (created or replaced on success)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


def _latency(m: dict) -> str:
    """The latency part of the summary, naming the device each number belongs to."""
    pred, device = m.get("predicted_latency_ms"), m.get("latency_device")
    if m.get("latency_source") == "predicted":  # another device's table: nothing was measured on it
        return f"latency predicted {pred:.4f} ms on {device} (not measured: this host is not {device})"
    on = f" on {device}" if device else ""
    noisy = " (noisy)" if (m.get("measurement") or {}).get("noisy") else ""
    spread = f" ±{m['measured_spread']:.1%}" if m.get("measured_spread") is not None else ""
    pred_s = f"predicted {pred:.4f} ms" if pred is not None else "no prediction (no latency table)"
    return f"latency measured{on} {m['measured_latency_ms']:.4f} ms{spread}{noisy}, {pred_s}"


def _summary(m: dict) -> None:
    print(f"arch {m['arch_id']}: accuracy {m['accuracy']:.4f} (onnxruntime, test split), {_latency(m)}; parity "
          f"{m['parity_max_abs_err']:.2g} (tolerance {m['parity_tolerance']:g})")
    q = m.get("int8")
    if q:
        q_ms = q.get("measured_latency_ms", q.get("host_latency_ms"))
        where = " on this host" if "host_latency_ms" in q else ""
        print(f"  int8: accuracy {q['accuracy']:.4f}, latency {q_ms:.4f} ms{where} ({q['speedup_vs_fp32']:.2f}x fp32)")
        if not q["faster_than_fp32"]:
            print(f"  note: {q['note']}")
        if q.get("summary"):  # searched under an int8 budget
            print(f"  int8 search target: {q['summary']}")
    for o in (m.get("ort"), (q or {}).get("ort")):
        if o:
            print(f"  {o['file']}: {o['optimization_style']} style; {o['style_choice']['reason']}")
    if m.get("latency_warning"):
        print(f"  warning: {m['latency_warning']}")


def run(args) -> int:
    from ..export import export
    from ._common import print_json

    manifest = export(args.run_dir, args.out, arch=args.arch, weights=args.weights, opset=args.opset, ort=args.ort,
                      int8=args.int8, dynamic_batch=args.dynamic_batch, latency_table=args.latency_table)
    if args.json:
        print_json(manifest)
        return 0
    for m in manifest.get("exports", [manifest]):
        _summary(m)
    print(f"wrote {args.out}/manifest.json")
    return 0
