"""CLI fuzz test (issue 12): malformed user input must end in one clean error line, never a traceback.

A generated, deterministic table of cases (seeded ``random``; ids name the mutation, so a failure is
reproducible with ``pytest tests/test_cli_fuzz.py -k ID``) over four kinds of input:

* ``cfg-*``:   search configs (YAML) with mutated values, for ``hwnas search --config``;
* ``arch-*``:  mutations of a real arch.json, for ``hwnas train`` (and ``hwnas latency predict``);
* ``table-*``: mutations of the shipped seed-cnn latency table, for every command that reads a table;
* ``run-*``:   mutations of a real finished search / ``--no-ray`` sweep, for export, report, resume, --inherit.

Each case builds its input files in its own folder, records the sha256 of every file there, runs
``hwnas.cli.main(argv)`` in-process and asserts: exit 0, or exit 2 whose last stderr line is
``hwnas: error: ...`` (or argparse's ``hwnas CMD: error: ...``), no ``Traceback``, no exception escaping
``main``, and, after a failure, every file that existed before is byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import budget_ms, host_table

from hwnas.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_TABLE = host_table("seed-cnn")  # this machine's (validate and calibrate refuse another device's)
LOW, HIGH = f"{budget_ms(0.15):g}", f"{budget_ms(0.4):g}"  # budgets on this machine (fixed ms mean little)
CASE_TIMEOUT_S = 90  # (the first case also builds the fixtures) longer: a validation that should have stopped it is missing
NAN, INF = math.nan, math.inf
DELETE = object()  # edit value: remove the key

# A search that succeeds in ~2 s: the base of every config case and of the run-folder fixtures.
BASE_CFG = {"space": "seed-cnn", "dataset": "digits", "epochs": 1, "warmup_epochs": 0, "data_limit": 64,
            "batch_size": 32, "threads": 1, "fine_tune_epochs": 0}
TINY = ["--epochs", "1", "--warmup-epochs", "0", "--data-limit", "64", "--batch-size", "32", "--threads", "1"]
TRAIN_TINY = ["--epochs", "1", "--data-limit", "64", "--batch-size", "32", "--threads", "1", "--no-progress"]
FAST_PROTOCOL = ["--runs", "5", "--trials", "1", "--warmup-runs", "1", "--warmup-s", "0", "--batch", "4",
                 "--no-progress"]


# ---- the case table -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One CLI run. ``argv`` may use ``{t}`` (the case folder) and ``{run}`` (``{t}/run``).

    ``files`` maps a path in the case folder to its source (see ``_materialise``); ``edits`` are
    ``(path, where, value)`` mutations applied afterwards (see ``_edit_file``).
    """

    id: str
    argv: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)
    edits: tuple[tuple[str, Any, Any], ...] = ()
    control: bool = False  # unmutated input: must exit 0 (proves the command line itself is right)


# Whole-file replacements (``where`` = RAW): bytes, or a function of the original bytes.
RAW = "raw"
FILE_GARBAGE = {
    "empty": b"",
    "binary": bytes(random.Random(7).randrange(256) for _ in range(512)),
    "truncated": lambda b: b[: len(b) // 2],
    "notjson": b"{this is: [not json\n",
    "list": b"[1, 2, 3]\n",
    "number": b"42\n",
    "null": b"null\n",
    "missing": None,  # delete the file
}

# Wrong values by the type the field expects; each key excludes tags that are legitimate for it or that
# would legitimately run for a long time (huge epochs).
INT_BAD = {"str": "3", "float": 2.5, "list": [1], "map": {"a": 1}, "bool": True, "nan": NAN, "inf": INF,
           "neg": -1, "zero": 0, "huge": 10**12}
FLOAT_BAD = {"str": "0.1", "list": [0.1], "map": {"a": 1}, "bool": True, "nan": NAN, "inf": INF, "-inf": -INF,
             "neg": -0.5, "zero": 0.0, "huge": 1e308}
STR_BAD = {"int": 5, "float": 2.5, "list": ["x"], "map": {"a": 1}, "bool": True, "empty": "", "unknown": "bogus"}
CONFIG_KEYS = {  # key: (pool, excluded tags)
    "epochs": (INT_BAD, {"huge"}), "warmup_epochs": (INT_BAD, {"zero"}), "batch_size": (INT_BAD, set()),
    "seed": (INT_BAD, {"zero"}), "data_limit": (INT_BAD, {"huge"}), "threads": (INT_BAD, {"huge"}),
    "fine_tune_epochs": (INT_BAD, {"zero", "huge"}), "shards_per_target": (INT_BAD, set()),
    "lr": (FLOAT_BAD, set()), "momentum": (FLOAT_BAD, {"zero"}), "weight_decay": (FLOAT_BAD, {"zero"}),
    "arch_lr": (FLOAT_BAD, set()), "arch_weight_decay": (FLOAT_BAD, {"zero"}), "tau_max": (FLOAT_BAD, set()),
    "tau_min": (FLOAT_BAD, set()), "target_ms": (FLOAT_BAD, set()), "hw_lambda": (FLOAT_BAD, set()),
    "dual_lr": (FLOAT_BAD, set()),
    "space": (STR_BAD, set()), "relaxation": (STR_BAD, set()), "dataset": (STR_BAD, set()),
    "device": (STR_BAD, set()), "hw_loss": (STR_BAD, set()), "latency_table": (STR_BAD, set()),
    "data_root": (STR_BAD, {"unknown", "empty"}),
    "learn_dropout": ({"str": "yes", "list": [True], "map": {"a": 1}, "nan": NAN, "int": 2}, set()),
    "space_args": ({"list": [1], "str": "x", "int": 3, "unknown": {"bogus": 1}, "mbconv-arg": {"widths": 3}}, set()),
    "subspace": ({"list": [1], "str": "C_i", "badvalue": {"C_i": [48]}, "badlabel": {"bogus": [1]},
                  "scalar": {"C_i": 16}, "emptyvalues": {"C_i": []}}, set()),
    "targets": ({"str": "x", "map": {"a": 1}, "zero": [0], "neg": [-1], "nan": [NAN], "dup": [0.05, 0.05],
                 "empty": [], "strs": ["0.05"]}, set()),
    "seeds": ({"strs": ["a"], "dup": [0, 0], "empty": [], "float": [2.5], "neg": [-1], "scalar": 5,
               "bool": [True], "huge": [2**70]}, set()),
    "ray": ({"int": 5, "list": [1], "str": "x", "unknown": {"bogus": 1}, "cpus-str": {"cpus_per_shard": "x"},
             "store-nan": {"object_store_mb": NAN}, "numcpus-neg": {"num_cpus": -1},
             "timeout-inf": {"schedule_timeout_s": INF}, "restarts-float": {"max_restarts": 1.5},
             "gpus-nan": {"gpus_per_shard": NAN}, "enabled-str": {"enabled": "no"}}, set()),
}
CONFIG_SPECIAL = {  # tag: edits of cfg.yaml (key path, value)
    "unknown-key": [(("epoch",), 1)],
    "space_args-unknown": [(("space_args",), {"bogus": 1})],
    "ray-not-mapping": [(("ray",), 5)],
    "unknown-keys-nested": [(("search", "epochs"), 1)],
    "tau-inverted": [(("tau_max",), 0.5), (("tau_min",), 5.0)],
    "tau-max-only-below-default-min": [(("tau_max",), 0.1)],
    "mbconv-on-digits": [(("space",), "mbconv")],
    "mbconv-bad-args": [(("space",), "mbconv"), (("space_args",), {"widths": [16], "depths": [1, 2]})],
    "budget-no-target": [(("hw_loss",), "budget")],
    "target-impossible": [(("target_ms",), 1e-9)],
    "mnist-no-root": [(("dataset",), "mnist")],
    "cuda-no-gpu": [(("device",), "cuda:7")],
    "warmup-eq-epochs": [(("warmup_epochs",), 1)],
    "learn-dropout-single-path": [(("learn_dropout",), True), (("relaxation",), "single-path")],
    "shards-over-widest": [(("shards_per_target",), 4)],
}
CONFIG_VARIANTS = {  # variant: (extra argv, --out target, extra files); "" is plain --out {t}/out
    "": ([], "{t}/out", {}),
    "json": (["--json"], "{t}/out", {}),
    "sweep": (["--targets", LOW, "--no-report"], "{t}/out", {}),
    "outfile": ([], "{t}/taken.txt", {"taken.txt": "text"}),
    "outrun": ([], "{run}", {"run": "single"}),
}


def _config_cases(rng: random.Random) -> list[Case]:
    """Each key x 3 wrong values (drawn), the special cases, and whole-file garbage; flag variants drawn."""
    rows: list[tuple[str, list]] = []
    for key, (pool, excluded) in CONFIG_KEYS.items():
        for tag in rng.sample(sorted(set(pool) - excluded), 3):
            rows.append((f"{key}={tag}", [((key,), pool[tag])]))
    rows += list(CONFIG_SPECIAL.items())
    variants = rng.choices(list(CONFIG_VARIANTS), weights=[10, 1, 2, 1, 2], k=len(rows))
    cases = []
    controls = [(("control", []), v) for v in ("", "sweep", "outrun")]
    for (tag, edits), variant in controls + list(zip(rows, variants, strict=True)):
        extra, out, files = CONFIG_VARIANTS[variant]
        argv = ("search", "--config", "{t}/cfg.yaml", "--out", out, "--no-ray", "--no-progress", *extra)
        cases.append(Case(f"cfg-{tag}" + (f"@{variant}" if variant else ""), argv, {"cfg.yaml": "config", **files},
                          tuple(("cfg.yaml", where, value) for where, value in edits), control=tag == "control"))
    for tag in FILE_GARBAGE:  # with tiny flags: an empty config is all defaults (a 10-epoch search)
        cases.append(Case(f"cfg-file={tag}", ("search", "--config", "{t}/cfg.yaml", "--out", "{t}/out", "--no-ray",
                                              "--no-progress", *TINY), {"cfg.yaml": "config"},
                          (("cfg.yaml", RAW, FILE_GARBAGE[tag]),)))
    cases.append(Case("cfg-file=yaml-python-tag", ("search", "--config", "{t}/cfg.yaml", "--out", "{t}/out",
                                                  "--no-ray", "--no-progress", *TINY), {"cfg.yaml": "config"},
                      (("cfg.yaml", RAW, b"epochs: !!python/object/apply:os.getpid []\n"),)))
    return cases


# arch.json: C_i etc. are ints in {16,32,64}..., act is relu|tanh, hparams may hold dropout in [0, 0.5].
LABELS = ("C_i", "C_o", "k", "k_p", "n", "act")
ARCH_VALUE_BAD = {"float": 64.0, "bool": True, "str": "32", "notchoice": 48, "null": None, "list": [32],
                  "map": {}, "nan": NAN, "neg": -128, "huge": 10**30, "upper": "RELU"}
ARCH_ROWS = [  # tag: (key path, value)
    ("extra-label", ("arch", "bogus"), 1), ("arch=list", ("arch",), [16, 32]), ("arch=null", ("arch",), None),
    ("arch=str", ("arch",), "C_i=16"), ("no-arch", ("arch",), DELETE),
    ("hparams=list", ("hparams",), [1]), ("hparams=str", ("hparams",), "x"),
    ("dropout=str", ("hparams", "dropout"), "x"), ("dropout=nan", ("hparams", "dropout"), NAN),
    ("dropout=0.9", ("hparams", "dropout"), 0.9), ("dropout=bool", ("hparams", "dropout"), True),
    ("hparam-unknown", ("hparams", "nope"), 0.1), ("dropout=0.25", ("hparams", "dropout"), 0.25),
    ("space=unknown", ("space",), "nope"), ("space=int", ("space",), 5), ("space=null", ("space",), None),
    ("space=list", ("space",), ["seed-cnn"]), ("space=mbconv", ("space",), "mbconv"), ("no-space", ("space",), DELETE),
    ("space_args=unknown", ("space_args",), {"bogus": 1}), ("space_args=list", ("space_args",), [1]),
    ("space_args=str", ("space_args",), "x"), ("arch_id=wrong", ("arch_id",), "000000000000"),
]


def _arch_cases(rng: random.Random) -> list[Case]:
    """Every wrong value on a drawn label, a missing label each, the rows above, whole-file garbage.

    Every case runs ``hwnas train``; a third of them (drawn) also ``hwnas latency predict``."""
    rows = [(f"{lab}={tag}", ("arch", lab), v) for tag, v in ARCH_VALUE_BAD.items() for lab in [rng.choice(LABELS)]]
    rows += [(f"no-{lab}", ("arch", lab), DELETE) for lab in rng.sample(LABELS, 2)] + ARCH_ROWS
    rows += [(f"file={tag}", RAW, g) for tag, g in FILE_GARBAGE.items()]
    train = ("train", "{t}/arch.json", *TRAIN_TINY)
    predict = ("latency", "predict", "--table", str(SHIPPED_TABLE), "{t}/arch.json")
    cases = [Case(f"arch-control@{name}", argv, {"arch.json": "arch"}, control=True)
             for name, argv in (("train", train), ("predict", predict))]
    for tag, where, value in rows:
        edits = (("arch.json", where, value),)
        cases.append(Case(f"arch-{tag}@train", train, {"arch.json": "arch"}, edits))
        if rng.random() < 1 / 3:
            cases.append(Case(f"arch-{tag}@predict", predict, {"arch.json": "arch"}, edits))
    return cases


# Latency table: "^" is the first key of a mapping (the first entry / the first unit's scale).
TABLE_ROWS = [
    ("entry=nan", ("entries", "^", "median_ms"), NAN), ("entry=neg", ("entries", "^", "median_ms"), -0.01),
    ("entry=inf", ("entries", "^", "median_ms"), INF), ("entry=str", ("entries", "^", "median_ms"), "0.01"),
    ("entry=null", ("entries", "^", "median_ms"), None), ("entry=bool", ("entries", "^", "median_ms"), True),
    ("entry=number", ("entries", "^"), 0.01), ("entry-no-median", ("entries", "^", "median_ms"), DELETE),
    ("entry-spread=nan", ("entries", "^", "spread"), NAN), ("entry-missing", ("entries", "^"), DELETE),
    ("entry-extra", ("entries", "bogus|x=1"), {"median_ms": 0.01, "spread": 0.0}),
    ("entries=list", ("entries",), []), ("entries=empty", ("entries",), {}), ("no-entries", ("entries",), DELETE),
    ("overhead=nan", ("overhead_ms",), NAN), ("overhead=neg", ("overhead_ms",), -1.0),
    ("overhead=str", ("overhead_ms",), "0.004"), ("overhead=huge", ("overhead_ms",), 1e9),
    ("c0=nan", ("calibration", "c0"), NAN), ("c0=str", ("calibration", "c0"), "0.004"),
    ("c0=neg", ("calibration", "c0"), -1.0), ("no-c0", ("calibration", "c0"), DELETE),
    ("scale=neg", ("calibration", "scales", "^"), -1.0), ("scale=nan", ("calibration", "scales", "^"), NAN),
    ("scale-missing", ("calibration", "scales", "^"), DELETE), ("scales=list", ("calibration", "scales"), [1.0]),
    ("boundary=str", ("calibration", "boundary", "^"), "x"), ("calibration=list", ("calibration",), []),
    ("calibration=null", ("calibration",), None), ("calibration=str", ("calibration",), "yes"),
    ("schema=wrong", ("schema",), "hwnas-latency-table/99"), ("space=mbconv", ("space", "name"), "mbconv"),
    ("space-hash=wrong", ("space", "hash"), "0000000000000000"), ("space=str", ("space",), "seed-cnn"),
    ("device=str", ("device",), "amd-epyc-1t"), ("device-threads=str", ("device", "threads"), "1"),
    ("device-isa=str", ("device", "isa"), "avx2"), ("protocol-runs=neg", ("protocol", "runs"), -5),
    ("protocol=str", ("protocol",), "fast"), ("protocol-aggregate=bogus", ("protocol", "aggregate"), "mean"),
    ("protocol-threads=zero", ("protocol", "threads"), 0),
] + [(f"file={tag}", RAW, g) for tag, g in FILE_GARBAGE.items() if tag != "null"]
TABLE_COMMANDS = {  # every row runs predict, plus one of the others (drawn)
    "predict": (("latency", "predict", "--table", "{t}/t.json", "{t}/arch.json"), {"arch.json": "arch"}),
    "search": (("search", "--latency-table", "{t}/t.json", "--target-ms", LOW, *TINY, "--no-ray", "--no-progress",
                "--out", "{t}/out"), {}),
    "calibrate": (("latency", "calibrate", "--table", "{t}/t.json", "--samples", "3", *FAST_PROTOCOL), {}),
    "validate": (("latency", "validate", "--table", "{t}/t.json", "--samples", "2", "--json", "{t}/val.json",
                  *FAST_PROTOCOL), {}),
    "export": (("export", "{run}", "--latency-table", "{t}/t.json", "--out", "{t}/exp"),
               {"run": "single", "exp": "export"}),
}


def _table_cases(rng: random.Random) -> list[Case]:
    cases = [Case(f"table-control@{cmd}", argv, {"t.json": "table", **files}, control=True)
             for cmd, (argv, files) in TABLE_COMMANDS.items()]
    for tag, where, value in TABLE_ROWS:
        other = rng.choices(["search", "calibrate", "validate", "export"], weights=[3, 3, 3, 1])[0]
        for cmd in ("predict", other):
            argv, files = TABLE_COMMANDS[cmd]
            cases.append(Case(f"table-{tag}@{cmd}", argv, {"t.json": "table", **files}, (("t.json", where, value),)))
    return cases


# Run folders: single = one finished search (arch.json, checkpoint.*, config.yaml, history.jsonl);
# sweep = two shards under shards/<key>/ plus candidates.jsonl and pareto.json. "CKPT" is the checkpoint
# file (whatever its extension), "SHARD" the first shard folder.
RUN_COMMANDS = {
    "export": ("export", "{run}", "--out", "{t}/exp"),
    "report": ("report", "{run}"),
    "resume": ("search", "--resume", "{run}", "--no-ray", "--no-progress", "--no-report"),
    "inherit": ("train", "{run}/arch.json", "--inherit", "{run}", *TRAIN_TINY),
}
SINGLE_ROWS = [  # tag, file, where, value, commands
    ("ckpt=random", "CKPT", RAW, FILE_GARBAGE["binary"], "export resume inherit"),
    ("ckpt=truncated", "CKPT", RAW, FILE_GARBAGE["truncated"], "export resume inherit"),
    ("ckpt=empty", "CKPT", RAW, b"", "export resume inherit"),
    ("ckpt=json", "CKPT", RAW, b'{"net": {}}', "export resume inherit"),
    ("ckpt=missing", "CKPT", RAW, None, "export inherit"),
    ("arch=notchoice", "arch.json", ("arch", "C_i"), 48, "export report"),
    ("arch=float", "arch.json", ("arch", "C_o"), 64.0, "export"),
    ("arch=null", "arch.json", ("arch",), None, "export report"),
    ("arch=list", "arch.json", RAW, b"[]", "export report inherit"),
    ("arch=truncated", "arch.json", RAW, FILE_GARBAGE["truncated"], "export report resume"),
    ("arch-space=mbconv", "arch.json", ("space",), "mbconv", "export report"),
    ("arch-missing", "arch.json", RAW, None, "export"),
    ("config-epochs=str", "config.yaml", ("epochs",), "1", "report resume"),
    ("config-space=int", "config.yaml", ("space",), 5, "export report resume inherit"),
    ("config-space_args=unknown", "config.yaml", ("space_args",), {"bogus": 1}, "export resume"),
    ("config-data_limit=str", "config.yaml", ("data_limit",), "x", "export resume"),
    ("config-dataset=unknown", "config.yaml", ("dataset",), "bogus", "export report"),
    ("config-ray=int", "config.yaml", ("ray",), 5, "resume"),
    ("config-unknown-key", "config.yaml", ("bogus",), 1, "resume"),
    ("config=list", "config.yaml", RAW, b"- 1\n- 2\n", "export report resume"),
    ("config=notyaml", "config.yaml", RAW, b"epochs: [1\n\t:", "export report resume"),
    ("config=binary", "config.yaml", RAW, FILE_GARBAGE["binary"], "export report resume"),
    ("config-missing", "config.yaml", RAW, None, "report resume"),
    ("runjson=garbage", "run.json", RAW, b"{oops", "export report resume"),
    ("runjson-version=99", "run.json", ("version",), 99, "resume"),
    ("runjson-kind=sweep", "run.json", ("kind",), "sweep", "report resume"),
    ("history=garbage", "history.jsonl", RAW, b"{not json\n[1,2]\n", "report resume"),
    ("history=lists", "history.jsonl", RAW, b"[1]\n2\n", "report"),
]
SWEEP_ROWS = [
    ("pareto=dict", "pareto.json", RAW, b'{"arch": {}}', "export report resume"),
    ("pareto=empty", "pareto.json", RAW, b"[]", "export report"),
    ("pareto-no-arch", "pareto.json", (0, "arch"), DELETE, "export report"),
    ("pareto-arch=notchoice", "pareto.json", (0, "arch", "C_i"), 48, "export report"),
    ("pareto-arch=str", "pareto.json", (0, "arch"), "x", "export report"),
    ("pareto-shard=escape", "pareto.json", ("*", "shard"), "../../..", "export"),
    ("pareto-shard=null", "pareto.json", ("*", "shard"), None, "export report"),
    ("pareto-accuracy=str", "pareto.json", (0, "accuracy"), "high", "export report"),
    ("pareto-accuracy=nan", "pareto.json", ("*", "accuracy"), NAN, "export report"),
    ("pareto-latency=str", "pareto.json", ("*", "measured_latency_ms"), "fast", "report"),
    ("pareto=truncated", "pareto.json", RAW, FILE_GARBAGE["truncated"], "export report resume"),
    ("candidates=garbage", "candidates.jsonl", RAW, b"{not json\n\x00\xff\n", "report resume"),
    ("shard-ckpt=random", "SHARD/CKPT", RAW, FILE_GARBAGE["binary"], "export resume"),
    ("shard-candidate=garbage", "SHARD/candidate.json", RAW, b"{oops", "resume report"),
    ("shard-candidate=list", "SHARD/candidate.json", RAW, b"[]", "resume report"),
    ("shard-arch=garbage", "SHARD/arch.json", RAW, b"{oops", "export report"),
    ("shard-history=garbage", "SHARD/history.jsonl", RAW, b"\x00\x01\n", "report"),
    ("shards-missing", "shards", RAW, None, "export report"),
    ("runjson-kind=search", "run.json", ("kind",), "search", "report resume"),
    ("config-targets=str", "config.yaml", ("targets",), "x", "report resume"),
    ("config-seeds=dup", "config.yaml", ("seeds",), [0, 0], "resume"),
    ("config-ray=list", "config.yaml", ("ray",), [1], "resume"),
    ("config-shards_per_target=str", "config.yaml", ("shards_per_target",), "2", "resume report"),
]
FOLDER_CASES = [  # (tag, argv, files): whole-folder and --out problems
    ("missing-folder@export", ("export", "{t}/nope", "--out", "{t}/exp"), {"exp": "export"}),
    ("missing-folder@report", ("report", "{t}/nope"), {}),
    ("missing-folder@resume", ("search", "--resume", "{t}/nope", "--no-ray", "--no-progress"), {}),
    ("folder-is-file@export", ("export", "{t}/taken.txt", "--out", "{t}/exp"), {"taken.txt": "text"}),
    ("folder-is-file@report", ("report", "{t}/taken.txt"), {"taken.txt": "text"}),
    ("folder-is-file@resume", ("search", "--resume", "{t}/taken.txt", "--no-ray", "--no-progress"),
     {"taken.txt": "text"}),
    ("empty-folder@export", ("export", "{t}/empty", "--out", "{t}/exp"), {"empty": "emptydir", "exp": "export"}),
    ("empty-folder@report", ("report", "{t}/empty"), {"empty": "emptydir"}),
    ("empty-folder@resume", ("search", "--resume", "{t}/empty", "--no-ray", "--no-progress"), {"empty": "emptydir"}),
    ("single-out=file@export", ("export", "{run}", "--out", "{t}/taken.txt"), {"run": "single", "taken.txt": "text"}),
    ("sweep-out=file@export", ("export", "{run}", "--out", "{t}/taken.txt"), {"run": "sweep", "taken.txt": "text"}),
    ("single-out=foreign@export", ("export", "{run}", "--out", "{t}/exp"), {"run": "single", "exp": "foreign"}),
    ("single-out=file@report", ("report", "{run}", "--out", "{t}/taken.txt"), {"run": "single", "taken.txt": "text"}),
    ("sweep-out=run@export", ("export", "{run}", "--out", "{run}"), {"run": "sweep"}),
    ("single-resume+flags", ("search", "--resume", "{run}", "--epochs", "3", "--no-ray"), {"run": "single"}),
]


def _run_cases(rng: random.Random) -> list[Case]:
    cases = [Case(f"run-{kind}-control@{cmd}", RUN_COMMANDS[cmd], {"run": kind, "exp": "export"}, control=True)
             for kind, cmds in (("single", RUN_COMMANDS), ("sweep", ("export", "report", "resume"))) for cmd in cmds]
    for kind, rows in (("single", SINGLE_ROWS), ("sweep", SWEEP_ROWS)):
        for tag, path, where, value, commands in rows:
            for cmd in commands.split():
                files = {"run": kind, **({"exp": "export"} if cmd == "export" else {})}
                cases.append(Case(f"run-{kind}-{tag}@{cmd}", RUN_COMMANDS[cmd], files, ((f"run/{path}", where, value),)))
    cases += [Case(f"run-{tag}", argv, files) for tag, argv, files in FOLDER_CASES]
    return cases


CASES = (_config_cases(random.Random(1201)) + _arch_cases(random.Random(1202)) + _table_cases(random.Random(1203))
         + _run_cases(random.Random(1204)))
assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


# ---- fixtures: real artefacts, made once ------------------------------------------------------------------
def _cli(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """A finished single search, a finished ``--no-ray`` sweep of two shards, and an earlier export of the
    single search (an --out that a failed export must leave as it was)."""
    d = tmp_path_factory.mktemp("fuzz-sources")
    (d / "base.yaml").write_text(yaml.safe_dump(BASE_CFG))
    for name, extra in (("single", []), ("sweep", ["--targets", f"{LOW},{HIGH}", "--no-report"])):
        rc, out, err = _cli(["search", "--config", str(d / "base.yaml"), "--out", str(d / name), "--no-ray",
                             "--no-progress", *extra])
        assert rc == 0, f"fixture run {name} failed: {out}\n{err}"
    rc, out, err = _cli(["export", str(d / "single"), "--out", str(d / "export")])
    assert rc == 0, f"fixture export failed: {out}\n{err}"
    (d / "empty").mkdir()
    (d / "text").write_text("precious, keep me\n")
    (d / "foreign").mkdir()
    (d / "foreign" / "notes.txt").write_text("not an export\n")
    return {"single": d / "single", "sweep": d / "sweep", "arch": d / "single" / "arch.json", "table": SHIPPED_TABLE,
            "config": d / "base.yaml", "export": d / "export", "emptydir": d / "empty", "text": d / "text",
            "foreign": d / "foreign"}


# ---- the harness ----------------------------------------------------------------------------------------
def _materialise(src: Path, dest: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copyfile(src, dest)


def _resolve(case_dir: Path, rel: str) -> Path:
    """``CKPT`` -> the checkpoint file there (``checkpoint.*``), ``SHARD`` -> the first shard folder."""
    path = case_dir
    for part in rel.split("/"):
        if part == "CKPT":
            found = sorted(p for p in path.glob("checkpoint.*") if not p.name.endswith(".tmp"))
            assert found, f"no checkpoint.* in {path}"
            path = found[0]
        elif part == "SHARD":
            path = sorted((path / "shards").iterdir())[0] if (path / "shards").is_dir() else path / "shards" / "?"
        else:
            path = path / part
    return path


def _edit(obj: Any, where: tuple, value: Any) -> None:
    """Set (or delete) ``obj[where]``; ``^`` is a mapping's first key, ``*`` every list element."""
    head, rest = where[0], where[1:]
    keys = range(len(obj)) if head == "*" else [next(iter(obj))] if head == "^" else [head]
    for k in keys:
        if rest:
            _edit(obj.setdefault(k, {}) if isinstance(obj, dict) else obj[k], rest, value)
        elif value is DELETE:
            del obj[k]
        else:
            obj[k] = value


def _edit_file(path: Path, where: Any, value: Any) -> None:
    if where == RAW:
        if value is None:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            path.write_bytes(value(path.read_bytes()) if callable(value) else value)
    elif path.suffix == ".json":
        obj = json.loads(path.read_text())
        _edit(obj, where, value)
        path.write_text(json.dumps(obj, indent=1))  # NaN/Infinity as Python's json writes them
    else:
        obj = yaml.safe_load(path.read_text())
        _edit(obj, where, value)
        path.write_text(yaml.safe_dump(obj))


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


CLEAN_ERROR = re.compile(r"^hwnas(?: [\w-]+)*: error: ")


@pytest.mark.timeout(CASE_TIMEOUT_S)  # pytest-timeout's Failed escapes main and is reported like any exception
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_input_fails_cleanly(case: Case, sources, tmp_path, capsys):
    t = tmp_path / "case"
    t.mkdir()
    for rel, src in case.files.items():
        _materialise(sources[src], t / rel)
    for rel, where, value in case.edits:
        _edit_file(_resolve(t, rel), where, value)
    before = _hashes(t)
    argv = [a.format(t=t, run=t / "run") for a in case.argv]

    escaped = None
    try:
        rc = main(argv)
    except SystemExit as err:  # argparse's usage errors (and --help)
        rc = err.code if isinstance(err.code, int) else 2
    except BaseException as err:  # noqa: BLE001 - anything escaping main is the bug under test
        rc, escaped = None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    out, err = capsys.readouterr()

    problems = []
    lines = [s for s in err.splitlines() if s.strip()]
    if case.control and rc != 0:
        problems.append(f"the unmutated control must exit 0 (else the cases built on it test nothing), got {rc}; "
                        f"stderr ends: {lines[-1] if lines else '(empty)'}")
    if escaped:
        problems.append(f"exception escaped main: {escaped}")
    elif rc not in (0, 2):
        problems.append(f"exit {rc}; stderr ends: {lines[-1] if lines else '(empty)'}")
    elif rc == 2 and not (lines and CLEAN_ERROR.match(lines[-1])):
        problems.append(f"exit 2 without a clean error line; stderr ends: {lines[-1] if lines else '(empty)'}")
    if "Traceback" in out + err:
        problems.append("a Traceback was printed")
    if rc != 0:
        after = _hashes(t)
        changed = sorted(p for p, h in before.items() if after.get(p) != h)
        if changed:
            problems.append(f"failed but changed or removed {changed}")
    shutil.rmtree(t, ignore_errors=True)  # copies of 13 MB checkpoints; a failure is reproduced by its id
    assert not problems, "; ".join(problems) + f"\n  command: hwnas {' '.join(argv)}"
