"""The names and formats of a run folder's files (``hwnas.run`` documents the layout)."""

from __future__ import annotations

FORMAT, VERSION = "hwnas.run", 1
EXPORT_FORMAT = "hwnas.export"

RUN_RECORD = "run.json"
CONFIG = "config.yaml"
HISTORY = "history.jsonl"
ARCH = "arch.json"
CANDIDATE = "candidate.json"
CANDIDATES = "candidates.jsonl"
PARETO = "pareto.json"
SHARDS = "shards"
LOCK = ".lock"
REPORT = "report"
WORKER = "worker.json"
VERIFY = "verify"  # a shard's verification: one record per fine-tuned arch (``search.verify``)
FINAL = "final"  # hwnas finalize: one record per (arch, seed) trained from scratch (``search.finalize``)
RAY_TRAIN = "ray_train"  # a data-parallel shard's Ray Train storage (made before the search starts)
CHECKPOINT = "checkpoint.safetensors"  # a search's whole state, as data (``hwnas._ckpt``)
LEGACY_CHECKPOINT = "checkpoint.pt"  # the pickled checkpoint older hwnas versions wrote (never loaded)
RESTART_FIX = ("start the search again with a new --out, or add --fresh to delete this run and start over (the "
               "old folder's arch.json/pareto.json stay readable)")
# every name a run folder may hold; ``--fresh`` removes these and nothing else
OWNED = (RUN_RECORD, CONFIG, HISTORY, ARCH, CANDIDATE, CANDIDATES, PARETO, SHARDS, REPORT, WORKER,
         CHECKPOINT, LEGACY_CHECKPOINT, RAY_TRAIN, VERIFY, FINAL, "report.md")
