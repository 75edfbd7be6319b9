"""``hwnas search``: run a differentiable architecture search and write the run folder."""

from __future__ import annotations

import argparse

from ..config import RayConfig, SearchConfig, SweepConfig, read_yaml, split_run_dict
from ..errors import ConfigError
from ..run import load_settings
from ._common import DATA_FIELDS, add_data_flags, add_runtime_flags, print_json

EPILOG = """\
examples:
  hwnas search --space seed-cnn --dataset digits --relaxation gumbel --epochs 10 --out runs/digits
  hwnas search --target-ms 0.05 --out runs/budget          one search under a 0.05 ms budget
  hwnas search --precision int8 --target-ms 0.04 --out runs/int8
                                                           budget of the int8 model (`hwnas profile --precision int8`)
  hwnas search --target amd-epyc-1t:0.05 --target latency_tables/pixel1/seed-cnn.json:0.2 --out runs/two
                                                           one search that meets both devices' budgets
  hwnas search --targets 0.04,0.08 --seeds 0,1 --out runs/sweep
                                                           4 shards as Ray actors on a local cluster
  hwnas search --config configs/digits-demo.yaml --ray-address auto --out /mnt/shared/runs/a
  hwnas search --resume runs/sweep                         finish a run whose driver died

A single search's folder gets config.yaml (resolved), history.jsonl (one line per epoch: losses,
accuracies, entropy and probabilities of each choice, E[T], lambda, the derived arch),
checkpoint.safetensors (the whole state as data, never a pickle, written atomically each epoch:
rerunning the same command resumes) and arch.json.
A sweep (--targets, several --seeds or --shards-per-target) gets shards/<key>/ (one such folder per
shard, plus candidate.json), candidates.jsonl and pareto.json. Shards run as Ray actors: on the cluster
--ray-address or $RAY_ADDRESS names, else on the one `hwnas cluster up` keeps running on this machine,
else on a private local cluster hwnas starts for the sweep (--ray-address local: always that one);
--no-ray runs them one after another here. A shard whose process dies restarts and resumes from its
last epoch checkpoint."""


def register(sub) -> None:
    p = sub.add_parser("search", help="search a supernet and derive an arch",
                       description="Train a weight-sharing supernet and its architecture distribution by "
                                   "bilevel gradient descent (weights on the train split, architecture on the "
                                   "validation split), then derive the most probable arch.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with SearchConfig keys; flags override it")
    p.add_argument("--space", help="search space (see `hwnas spaces`; default seed-cnn)")
    p.add_argument("--relaxation", help="softmax (DARTS mixture), gumbel (FBNet, annealed; default) or "
                                        "single-path (one hard sample per step, about one sub-network's cost)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="search epochs (default 10)")
    g.add_argument("--warmup-epochs", type=int, help="first epochs train weights only (default 2)")
    g.add_argument("--batch-size", type=int, help="batch size for both splits (default 64)")
    g.add_argument("--lr", type=float, help="weight learning rate, SGD with cosine decay (default 0.05)")
    g.add_argument("--arch-lr", type=float, help="architecture learning rate, Adam (default 0.05)")
    g.add_argument("--tau-max", type=float, help="start temperature (gumbel default 5.0, single-path 1.0)")
    g.add_argument("--tau-min", type=float, help="end temperature (gumbel default 0.5, single-path 1.0)")
    g.add_argument("--learn-dropout", action="store_true", default=None,
                   help="also learn the space's continuous dropout rate on the validation loss")
    h = p.add_argument_group("hardware-aware search (latency tables: see `hwnas profile --help`)")
    h.add_argument("--latency-table", metavar="PATH",
                   help="latency table JSON of the target device (default with --target-ms/--hw-loss: the shipped "
                        "table matching this machine)")
    h.add_argument("--hw-loss", help="mul: FBNet CE*a*log(E[T])^b; add: ProxylessNAS CE + lambda*E[T]/T_ref; "
                                     "budget: lambda adapted by dual ascent so E[T] ends under --target-ms "
                                     "(default: budget when a target is given, else mul)")
    h.add_argument("--precision", choices=("fp32", "int8"),
                   help="whose latency the budget and hardware loss are about: the fp32 model (default) or the int8 "
                        "QDQ model `hwnas export --int8` ships (an int8 table: `hwnas profile --precision int8`)")
    h.add_argument("--target-ms", type=float, help="latency budget (ms): the derived arch is the most probable one "
                                                   "predicted at or under it")
    h.add_argument("--target", action="append", metavar="DEVICE_TABLE:BUDGET_MS",
                   help="repeatable: a device (a latency table path, or a device name with a table under "
                        "latency_tables/) and its budget in ms; the search keeps every target's expected latency "
                        "under its budget (one dual variable each) and derives the most probable arch predicted "
                        "within all of them. The first is the primary target (= --latency-table/--target-ms: what "
                        "--targets sweeps, the Pareto front and measurement use); the others keep their budget in "
                        "every shard. Config key: latency_targets")
    h.add_argument("--targets", metavar="T1,T2,...",
                   help="one search per budget (ms), then candidates.jsonl and pareto.json in RUN_DIR")
    h.add_argument("--seeds", metavar="S1,S2,...", help="one search per seed (x each target)")
    h.add_argument("--hw-lambda", type=float, help="add: weight of the latency term (0.1); budget: start value (0)")
    h.add_argument("--dual-lr", type=float, help="budget: dual-ascent step size on lambda (default 0.2)")
    h.add_argument("--fine-tune-epochs", type=int,
                   help="sweeps: fine-tune each derived arch this many epochs before scoring it (default 3)")
    h.add_argument("--verify-k", type=int, metavar="K",
                   help="sweeps: derive the K most probable archs within each budget, fine-tune each and keep the "
                        "best on the validation split (default 3; 1 = the most probable arch only)")
    r = p.add_argument_group("sweeps on Ray (see cluster/README.md)")
    r.add_argument("--shards-per-target", type=int, metavar="K",
                   help="split the space's widest label into this many sub-spaces, one shard each (default 1)")
    r.add_argument("--ray-address", metavar="ADDRESS", help="join this Ray cluster (auto, HOST:6379, ray://HOST:10001), or "
                                         "local: a private local cluster for this sweep; default: $RAY_ADDRESS if "
                                         "set, else the one `hwnas cluster up` runs, else a private local cluster")
    r.add_argument("--no-ray", action="store_true", help="run the shards one after another in this process")
    r.add_argument("--workers-per-shard", type=int, metavar="N",
                   help="train each shard's supernet data-parallel across N Ray Train workers (default 1)")
    r.add_argument("--cpus-per-shard", type=float, metavar="C", help="CPUs each shard worker asks Ray for (default 1)")
    r.add_argument("--gpus-per-shard", type=float, metavar="G", help="GPUs each shard worker asks Ray for (default 0; 1 on GPU "
                                                        "clusters, fractions share a GPU)")
    r.add_argument("--autoscaling", action="store_true", default=None,
                   help="the cluster starts nodes on demand: do not refuse shards that no live node fits yet")
    r.add_argument("--dashboard", action="store_true", default=None,
                   help="a local cluster (no --ray-address): also start Ray's dashboard and metrics, on 127.0.0.1")
    r.add_argument("--storage", metavar="URI", help="keep shard folders at this URI (s3://bucket/run, gs://..., "
                                                    "file:///path) instead of under RUN_DIR; RUN_DIR gets a copy at "
                                                    "the end")
    r.add_argument("--max-restarts", type=int, metavar="N", help="restarts of a crashed shard actor, each resuming from the last "
                                                    "epoch checkpoint (default 3)")
    add_data_flags(p)
    add_runtime_flags(p)
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (created; a rerun of the same command resumes it; a "
                                                    "folder holding another run is refused)")
    p.add_argument("--fresh", action="store_true", help="delete the run already in --out (only its run files) and "
                                                        "start over")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish the run in RUN_DIR with the settings it was started "
                                                       "with (finished shards are kept); --ray-address may change")
    p.add_argument("--json", action="store_true", help="print arch.json to stdout at the end")
    p.add_argument("--no-report", action="store_true", help="sweeps: skip writing RUN_DIR/report (hwnas report)")
    p.set_defaults(func=run)


FIELDS = {**DATA_FIELDS, "space": "space", "relaxation": "relaxation", "epochs": "epochs",
          "warmup_epochs": "warmup_epochs", "batch_size": "batch_size", "lr": "lr", "arch_lr": "arch_lr",
          "tau_max": "tau_max", "tau_min": "tau_min", "learn_dropout": "learn_dropout",
          "latency_table": "latency_table", "precision": "precision", "hw_loss": "hw_loss", "target_ms": "target_ms",
          "hw_lambda": "hw_lambda", "dual_lr": "dual_lr", "fine_tune_epochs": "fine_tune_epochs",
          "verify_k": "verify_k"}


RAY_FIELDS = {"ray_address": "address", "workers_per_shard": "workers_per_shard",
              "cpus_per_shard": "cpus_per_shard", "gpus_per_shard": "gpus_per_shard", "max_restarts": "max_restarts",
              "autoscaling": "autoscaling", "storage": "storage", "dashboard": "dashboard"}


def _floats(text: str | None, what: str, kind: type = float) -> list | None:
    """``"0.02,0.04"`` as ``[0.02, 0.04]`` (``kind=int``: whole numbers only, ``"0,1"``)."""
    if text is None:
        return None
    try:
        return [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        example = "0,1" if kind is int else "0.02,0.04"
        raise ConfigError(f"{what} must be comma-separated {'whole ' if kind is int else ''}numbers, e.g. {example}, "
                          f"got {text!r}") from None


def print_front(front: list[dict]) -> None:
    from ..search.pareto import other_targets, target_of

    ci = any(c.get("accuracy_ci") for c in front)  # after hwnas finalize: the mean and its 95% interval
    width = 24 if ci else 8
    others = other_targets(front)  # the front is on the primary target; the other targets are columns
    extra = "".join(f" {'on ' + d:>14}" for d in others)
    print(f"{'shard':<14} {'arch id':<13} {'accuracy':>{width}} {'predicted ms':>12} {'measured ms':>11}{extra}  arch")

    def ms(v: float | None) -> str:  # a shard without a budget neither predicts nor measures
        return "-" if v is None else f"{v:.4f}"

    def acc(c: dict) -> str:
        lo_hi = c.get("accuracy_ci")
        return f"{c['accuracy']:.4f}" + (f" ({lo_hi[0]:.4f}-{lo_hi[1]:.4f})" if lo_hi else "")

    for c in front:
        cols = "".join(f" {ms((target_of(c, d) or {}).get('predicted_latency_ms')):>14}" for d in others)
        print(f"{c['shard']:<14} {c['arch_id']:<13} {acc(c):>{width}} {ms(c.get('predicted_latency_ms')):>12} "
              f"{ms(c.get('measured_latency_ms')):>11}{cols}  {c['arch']}")


def _load(args) -> tuple[SearchConfig, SweepConfig, RayConfig, bool]:
    """Config file, then flags: the search, its shards, how they run on Ray, and whether it is a sweep."""
    data = read_yaml(args.config) if args.config else {}
    flags = {name: getattr(args, dest) for dest, name in FIELDS.items() if getattr(args, dest, None) is not None}
    if args.targets is not None:
        flags["targets"] = _floats(args.targets, "--targets")
    if args.seeds is not None:
        flags["seeds"] = _floats(args.seeds, "--seeds", int)
    if args.shards_per_target is not None:
        flags["shards_per_target"] = args.shards_per_target
    data.update(flags)
    ray_part = data.get("ray") or {}
    if not isinstance(ray_part, dict):
        raise ConfigError(f"'ray' in {args.config} must be a mapping of RayConfig keys (e.g. ray: {{cpus_per_shard: 1}}),"
                          f" got {ray_part!r}")
    ray_flags = {name: getattr(args, dest) for dest, name in RAY_FIELDS.items() if getattr(args, dest) is not None}
    if args.no_ray:
        ray_flags["enabled"] = False
    data["ray"] = {**ray_part, **ray_flags}
    explicit_targets = "targets" in data
    from ..search.targets import primary_budget

    if args.target is not None:
        data["latency_targets"] = list(args.target)
        flags["latency_targets"] = args.target
    data.setdefault("targets", [data.get("target_ms", primary_budget(data.get("latency_targets")))])
    data.setdefault("seeds", [data.get("seed", 0)])
    cfg, sweep, ray_cfg = split_run_dict(data, args.config or "flags",
                                         flags={*flags, *(f"ray.{k}" for k in ray_flags)})
    is_sweep = explicit_targets or len(sweep.seeds) > 1 or sweep.shards_per_target > 1
    return cfg, sweep, ray_cfg, is_sweep


def _resume(args) -> tuple[SearchConfig, SweepConfig, RayConfig, bool]:
    given = [f"--{d.replace('_', '-')}" for d in [*FIELDS, "targets", "seeds", "shards_per_target", "config", "out",
                                                   "workers_per_shard", "cpus_per_shard", "gpus_per_shard", "target"]
             if getattr(args, d, None) is not None]
    if args.fresh:
        given.append("--fresh")
    if given:
        raise ConfigError(f"--resume takes its settings from {args.resume}/config.yaml; drop {', '.join(given)}")
    args.out = args.resume
    cfg, sweep, ray_cfg, is_sweep = load_settings(args.resume)  # a single search resumes from its checkpoint.pt
    changes = {k: v for k, v in (("address", args.ray_address), ("max_restarts", args.max_restarts),
                                                 ("dashboard", args.dashboard)) if v is not None}
    if args.no_ray:
        changes["enabled"] = False
    return cfg, sweep, ray_cfg.replace(**changes), is_sweep


def run(args) -> int:
    from ..distributed import run_shards
    from ..preflight import check_data
    from ..search import run_search

    if args.resume is None and args.out is None:
        raise ConfigError("pass --out RUN_DIR (a new or interrupted run) or --resume RUN_DIR")
    cfg, sweep, ray_cfg, is_sweep = _resume(args) if args.resume else _load(args)
    if is_sweep:
        result = run_shards(cfg, sweep, ray_cfg, args.out, progress=not args.no_progress, fresh=args.fresh)
        if args.json:
            print_json(result.pareto)
        else:
            print(f"Pareto front ({len(result.pareto)} of {len(result.candidates)} candidates; accuracy = "
                  f"{result.candidates[0]['accuracy_kind']}):")
            print_front(result.pareto)
            print(f"wrote {args.out}/pareto.json and {args.out}/candidates.jsonl")
        if not args.no_report:
            from ..report import write_report

            path = write_report(args.out)
            if not args.json:
                print(f"report: {path} (figures beside it; export the best arch with: hwnas export {args.out} "
                      f"--out EXPORT_DIR)")
        return 0
    check_data(cfg)  # a missing or corrupt data root: one line, before the run folder or the supernet exist
    result = run_search(cfg, args.out, progress=not args.no_progress, fresh=args.fresh)
    if args.json:
        print_json(result.to_json())
    else:
        acc = result.val_accuracy
        print(f"derived arch {result.arch_id}: {result.arch}  (supernet val accuracy {acc:.3f})")
        if "predicted_latency_ms" in result.extra:
            e = result.extra
            budget = f", budget {e['target_latency_ms']} ms" if e.get("target_latency_ms") else ""
            if e.get("measured_latency_ms") is not None:
                noisy = " NOISY" if (e.get("measurement") or {}).get("noisy") else ""
                print(f"latency: predicted {e['predicted_latency_ms']:.4f} ms, measured {e['measured_latency_ms']:.4f} ms"
                      f"{noisy} (onnxruntime, {e['device']}{budget})")
            else:  # a table of another device: nothing of this host is recorded under its name
                print(f"latency: predicted {e['predicted_latency_ms']:.4f} ms (device {e['device']}, not this host: "
                      f"not measured{budget})")
        for t in (result.extra.get("latency_targets") or [])[1:]:  # the other --target devices
            print(f"latency on {t['device']}: predicted {t['predicted_latency_ms']:.4f} ms (budget {t['budget_ms']} ms, "
                  f"table {t['table']})")
        print(f"wrote {args.out}/arch.json; retrain it with: hwnas train {args.out}/arch.json")
    return 0
