"""The device side of the ssh/adb/offline runners: ``hwnas_kit.py``, pushed next to ``hwnas_protocol.py``.

Needs only Python 3, numpy and onnxruntime on the device (never torch or hwnas): hwnas copies this file as
``hwnas_kit.py`` and ``hwnas/latency/protocol.py`` as ``hwnas_protocol.py`` into the device's work dir.
Layout there::

    hwnas_kit.py  hwnas_protocol.py
    jobs/<job>/job.json            protocol, pin_core, batch, models [{name, file, input_shape}]
    jobs/<job>/models/<file>       ONNX files (pushed once; present ones are never pushed again)
    jobs/<job>/results/<stem>.json one per measured model (written after each round-robin batch)
    jobs/<job>/log.jsonl           one line per model measured (so a test can see nothing ran twice)

Commands (each prints JSON on stdout):

* ``info [--provider P]``: the device's own fingerprint (CPU model, ISA, caches, cores, OS, onnxruntime
  version, available execution providers, whether cores can be pinned) and the kit's digest;
* ``status --job J``: model files present (with their input shapes) and results already written;
* ``run --job J``: time every model of ``job.json`` that has no result yet; one ``{"results": [...]}``
  line per batch, then ``{"done": n}``. Resumable: a rerun measures only what has no result file;
* ``run-all``: ``run`` for every job folder (the offline kit: copy, run, copy back).

Test hook: ``HWNAS_KIT_DROP_AFTER=N`` (environment) makes ``run`` kill its parent (the ssh session) and
exit once N models were measured by it: a connection dropped mid-profile, deterministically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hwnas_protocol as P  # noqa: E402 (the sibling file pushed with this one)

KIT_FILES = ("hwnas_kit.py", "hwnas_protocol.py")


def _here(*parts: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), *parts)


def kit_digest() -> str:
    """sha256 (16 hex) of this kit's two files: the host re-pushes them only when it differs."""
    h = hashlib.sha256()
    for name in KIT_FILES:
        with open(_here(name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def fingerprint(provider: str) -> dict:
    """This device's fingerprint: ``host_info`` plus OS, providers, pinning support, kit digest."""
    info = P.host_info(P.Protocol(provider=provider))
    info.update({"os": platform.platform(), "providers": list(P.ort.get_available_providers()),
                 "pinning": hasattr(os, "sched_setaffinity"), "kit": kit_digest()})
    return info


def _job_dir(job: str) -> str:
    return _here("jobs", job)


def _results(job: str) -> dict:
    out = {}
    rdir = os.path.join(_job_dir(job), "results")
    for name in sorted(os.listdir(rdir)) if os.path.isdir(rdir) else []:
        if name.endswith(".json"):
            try:
                with open(os.path.join(rdir, name)) as f:
                    out[name[:-5]] = json.load(f)
            except ValueError:  # a torn write cannot happen (atomic), but never trust a device's disk
                continue
    return out


def status(job: str) -> dict:
    """Model files present (by file name) and results written (by file stem) of ``job``."""
    mdir = os.path.join(_job_dir(job), "models")
    models = sorted(os.listdir(mdir)) if os.path.isdir(mdir) else []
    shapes = {}
    try:
        with open(os.path.join(_job_dir(job), "job.json")) as f:
            shapes = {m["file"]: m["input_shape"] for m in json.load(f)["models"]}
    except (OSError, ValueError, KeyError):
        pass
    return {"models": models, "results": _results(job), "shapes": shapes, "kit": kit_digest()}


def _pin(core) -> bool:
    if core is None or not hasattr(os, "sched_setaffinity"):
        return False
    os.sched_setaffinity(0, {int(core)})
    return True


def run(job: str) -> int:
    """Time the models of ``job`` that have no result yet (see the module docstring)."""
    jdir = _job_dir(job)
    with open(os.path.join(jdir, "job.json")) as f:
        spec = json.load(f)
    protocol = P.Protocol.from_dict(spec["protocol"])
    pinned = _pin(spec.get("pin_core"))
    done = _results(job)
    todo = [m for m in spec["models"] if os.path.splitext(m["file"])[0] not in done]
    drop_after = int(os.environ.get("HWNAS_KIT_DROP_AFTER") or 0)
    os.makedirs(os.path.join(jdir, "results"), exist_ok=True)
    measured, batch = 0, max(1, int(spec.get("batch", 8)))
    for s in range(0, len(todo), batch):
        chunk = todo[s:s + batch]
        models = []
        for m in chunk:
            with open(os.path.join(jdir, "models", m["file"]), "rb") as f:
                models.append(P.Model(m["name"], f.read(), tuple(m["input_shape"])))
        rows = []
        for m, r in zip(chunk, P.measure_models(models, protocol)):  # noqa: B905 (devices may run Python < 3.10)
            row = {"name": m["name"], "median_ms": r.median_ms, "spread": r.spread, "trial_ms": list(r.trial_ms),
                   "pinned": pinned}
            P._atomic_write_json(os.path.join(jdir, "results", os.path.splitext(m["file"])[0] + ".json"), row)
            with open(os.path.join(jdir, "log.jsonl"), "a") as f:
                f.write(json.dumps({"measured": m["name"], "pid": os.getpid()}) + "\n")
            rows.append(row)
        print(json.dumps({"results": rows}), flush=True)
        measured += len(chunk)
        if drop_after and measured >= drop_after:
            os.kill(os.getppid(), signal.SIGKILL)  # the ssh session: the host sees the connection drop
            os._exit(75)
    print(json.dumps({"done": len(spec["models"])}), flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="hwnas device kit (needs Python 3, numpy, onnxruntime). Offline: "
                                "python hwnas_kit.py run-all, then copy this folder back to the host.")
    p.add_argument("command", choices=("info", "status", "run", "run-all"))
    p.add_argument("--job", default=None, help="job folder name under jobs/")
    p.add_argument("--provider", default="CPUExecutionProvider", help="execution provider to record in info")
    args = p.parse_args(argv)
    if args.command == "info":
        print(json.dumps(fingerprint(args.provider)))
    elif args.command == "status":
        print(json.dumps(status(args.job)))
    elif args.command == "run":
        return run(args.job)
    else:
        jobs = sorted(os.listdir(_here("jobs"))) if os.path.isdir(_here("jobs")) else []
        provider = args.provider
        if jobs:
            with open(_here("jobs", jobs[0], "job.json")) as f:
                provider = json.load(f)["protocol"].get("provider", provider)
        P._atomic_write_json(_here("device.json"), fingerprint(provider))
        for job in jobs:
            print(f"hwnas_kit: job {job}", file=sys.stderr, flush=True)
            run(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
