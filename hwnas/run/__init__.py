"""The one owner of a run folder: its layout, its typed and versioned records, and one writer at a time.

A single search (``hwnas search --out RUN``) and each shard of a sweep (``RUN/shards/<key>/``) hold::

    run.json                  {"format": "hwnas.run", "version", "kind": "search", "hwnas", "created"}
    config.yaml               the resolved SearchConfig: every hyperparameter, defaults included
    history.jsonl             one line per epoch (rewritten from the checkpoint on resume)
    checkpoint.safetensors    the whole search state as data (``hwnas._ckpt``; never a pickle)
    arch.json                 the derived arch: space, space_args, arch, arch_id, hparams, latencies
    candidate.json            (a sweep's shard) its scored candidate
    verify/<arch_id>.json     (a sweep's shard) each of the k derived archs fine-tuned and scored on validation

and a sweep (``kind: "sweep"``) holds ``run.json``, ``config.yaml`` (search keys, targets, seeds,
shards_per_target and a ``ray:`` section), ``candidates.jsonl``, ``pareto.json`` and ``shards/``;
``hwnas finalize`` adds ``final/<arch_id>-s<seed>.json`` (one arch trained from scratch with one seed).

Rules every writer follows through this module: a folder has one writer (``RunFolder.writer`` holds an
exclusive ``flock`` on ``RUN/.lock``; the kernel drops it when the process dies); a folder is reused only
to resume the same kind of run with the same resolved config (``RunFolder.prepare``); ``--fresh`` deletes
only the files this layout names. Readers validate what they read and fail with one line naming the file
and the fix.
"""

from .folder import (
    RunFolder,
    checkpoint_of,
    config_diff,
    enclosing_run,
    load_settings,
    sweep_record,
    write_config,
)
from .layout import (
    ARCH,
    CANDIDATE,
    CANDIDATES,
    CHECKPOINT,
    CONFIG,
    EXPORT_FORMAT,
    FINAL,
    FORMAT,
    HISTORY,
    LEGACY_CHECKPOINT,
    LOCK,
    OWNED,
    PARETO,
    RAY_TRAIN,
    REPORT,
    RESTART_FIX,
    RUN_RECORD,
    SHARDS,
    VERIFY,
    VERSION,
    WORKER,
)
from .records import (
    ArchRecord,
    check_candidate,
    is_export,
    progress,
    read_arch,
    read_candidate,
    read_front,
    read_jsonl,
    record_start,
    space_from,
    update_arch,
    write_candidate,
    write_front,
    write_lines,
)

__all__ = [
    "ARCH",
    "ArchRecord",
    "CANDIDATE",
    "CANDIDATES",
    "CHECKPOINT",
    "CONFIG",
    "EXPORT_FORMAT",
    "FINAL",
    "FORMAT",
    "HISTORY",
    "LEGACY_CHECKPOINT",
    "LOCK",
    "OWNED",
    "PARETO",
    "RAY_TRAIN",
    "REPORT",
    "RESTART_FIX",
    "RUN_RECORD",
    "RunFolder",
    "SHARDS",
    "VERIFY",
    "VERSION",
    "WORKER",
    "check_candidate",
    "checkpoint_of",
    "config_diff",
    "enclosing_run",
    "is_export",
    "load_settings",
    "progress",
    "read_arch",
    "read_candidate",
    "read_front",
    "read_jsonl",
    "record_start",
    "space_from",
    "update_arch",
    "sweep_record",
    "write_candidate",
    "write_config",
    "write_front",
    "write_lines",
]
