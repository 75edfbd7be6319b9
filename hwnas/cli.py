"""The ``hwnas`` command. Thin: each sub-command lives in ``hwnas/commands/<group>.py`` and only
parses flags and calls the library. User errors (``HwnasError``) print one line and exit 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import HwnasError

# Command modules, in the order ``hwnas --help`` lists them. Each defines ``register(subparsers)``.
COMMAND_MODULES = ("spaces", "configs", "search", "cluster", "finalize", "train", "latency", "devicekit",
                   "export", "report")

DESCRIPTION = """\
hwnas: hardware-aware differentiable neural architecture search.

Typical flow:
  hwnas spaces                                        list the search spaces
  hwnas configs                                       list the shipped example configs (--config NAME)
  hwnas profile --space seed-cnn --device mycpu       measure a latency table (shipped for this CPU)
  hwnas search --space seed-cnn --target-ms 0.04 --out runs/a
                                                      search under a 0.04 ms budget, derive arch.json
  hwnas search --targets 0.02,0.04,0.08 --out runs/p  one shard per budget on Ray -> pareto.json, report/
  hwnas search --resume runs/p                        finish a sweep whose driver died
  hwnas cluster up                                    keep a local Ray cluster running; sweeps join it (no
                                                      start-up per sweep); hwnas cluster down stops it
  hwnas finalize runs/p --seeds 0,1,2                 retrain the candidates from scratch; front with intervals
  hwnas report runs/p                                 report.md + figures (Pareto, probabilities, latency)
  hwnas train runs/a/arch.json                        retrain the derived arch, report test accuracy
  hwnas export runs/p --out exports/p                 the best arch as checked ONNX (+ .ort, int8)
Run `hwnas COMMAND --help` for the options of each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwnas", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"hwnas.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HwnasError as err:
        print(f"hwnas: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted; finished work in the output folder is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
