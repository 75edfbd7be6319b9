"""``hwnas cluster up|status|down``: a long-lived local Ray cluster that sweeps join instead of starting one."""

from __future__ import annotations

import argparse
import time

DESCRIPTION = """\
Keep one Ray cluster running on this machine between sweeps. A sweep with no --ray-address (and no
$RAY_ADDRESS) joins it instead of starting and stopping a private cluster of its own, which costs about
10 s per sweep (Ray start-up and shutdown, cold worker processes; benchmarks/ray_scaling.py measured a
sweep's fixed overhead of 12.5 s with a private cluster and 4.7 s joining a running one).

The cluster has the safe defaults of the private one a sweep starts:
  * every Ray process (GCS, raylet, object manager, workers, agents, metrics) listens on 127.0.0.1 only;
  * no dashboard and no metrics collection unless --dashboard (then both, on 127.0.0.1);
  * token authentication on; the token file (~/.ray/auth_token, or $RAY_AUTH_TOKEN_PATH) is made mode 0600;
  * usage stats off; a bounded object store; workers import torch and hwnas as they start.

It is recorded in ~/.cache/hwnas/cluster.json ($HWNAS_CLUSTER_STATE overrides the path; mode 0600).
`hwnas cluster down` stops exactly this cluster's processes, not other Ray clusters of yours."""

EPILOG = """\
commands:
  hwnas cluster up [--num-cpus N] [--num-gpus N] [--object-store-mb M] [--dashboard]
        start it (exit 0; if it runs already, say so and exit 0)
  hwnas cluster status    address, resources, uptime, busy workers; exit 0 if it runs, 1 if not
  hwnas cluster down      stop it and remove the state file (exit 0, also when none ran)

then:
  hwnas search --targets 0.02,0.04 --out runs/a      joins it ("joined the hwnas cluster on 127.0.0.1:PORT")
  hwnas search ... --ray-address local               a private cluster for this sweep anyway"""


def register(sub) -> None:
    p = sub.add_parser("cluster", help="keep a local Ray cluster running between sweeps (up, status, down)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start the cluster (a no-op if it runs)", description=DESCRIPTION,
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("--num-cpus", type=int, metavar="N", help="CPUs it offers to shards (default: all cores)")
    up.add_argument("--num-gpus", type=int, metavar="N", help="GPUs it offers (default: what Ray detects)")
    up.add_argument("--object-store-mb", type=int, default=150, metavar="M",
                    help="object store size in MiB (default 150; only paths and small dicts go through it; min 80)")
    up.add_argument("--dashboard", action="store_true", help="also start Ray's dashboard and metrics, on 127.0.0.1")
    up.set_defaults(func=run_up)
    st = actions.add_parser("status", help="is it running; address, resources, uptime (exit 1 if not running)")
    st.set_defaults(func=run_status)
    down = actions.add_parser("down", help="stop it (only its own processes) and remove the state file")
    down.set_defaults(func=run_down)


def _check_counts(args) -> None:
    from ..errors import ConfigError

    for flag, value in (("--num-cpus", args.num_cpus), ("--num-gpus", args.num_gpus)):
        if value is not None and value < (1 if flag == "--num-cpus" else 0):
            raise ConfigError(f"{flag} must be {'at least 1' if flag == '--num-cpus' else '0 or more'}, got {value}")
    if args.object_store_mb < 80:
        raise ConfigError(f"--object-store-mb must be at least 80 (Ray's minimum is 75 MiB), got {args.object_store_mb}")


def run_up(args) -> int:
    from ..distributed.local_head import start_head, state_path

    _check_counts(args)
    state, started = start_head(num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                                object_store_mb=args.object_store_mb, dashboard=args.dashboard)
    if started:
        print(f"started the hwnas cluster on {state.describe()}")
        if state.dashboard_url:
            print(f"dashboard: {state.dashboard_url}")
        print(f"recorded in {state_path()}; sweeps on this machine join it; stop it with: hwnas cluster down")
    else:
        print(f"the hwnas cluster runs already on {state.describe()} (up {_age(state.started_unix)}); "
              "stop it with: hwnas cluster down")
    return 0


def run_status(args) -> int:
    from importlib.metadata import version

    from ..distributed.local_head import is_alive, live_head, read_state, state_path, workers_of

    state = read_state()
    if state is not None and not is_alive(state):
        state = live_head(note=print)  # says why: a stale file (removed) or a head that does not answer
    if state is None:
        print("no hwnas cluster running (start one with: hwnas cluster up)")
        return 1
    print(f"hwnas cluster on {state.describe()}")
    if state.ray_version != version("ray"):
        print(f"this is Ray {version('ray')}: sweeps do not join it; restart it with hwnas cluster down && "
              "hwnas cluster up")
    print(f"up {_age(state.started_unix)}, Ray processes in session {state.sid}, logs in {state.session_dir}/logs")
    if state.dashboard_url:
        print(f"dashboard: {state.dashboard_url}")
    workers = {k: v for k, v in workers_of(state).items() if not k.endswith("Agent")}
    idle = workers.pop("IDLE", 0)
    busy = ", ".join(f"{n} {name}" for name, n in sorted(workers.items())) or "none"
    print(f"worker processes: {idle} idle; actors and tasks: {busy}")
    print(f"state file: {state_path()}")
    return 0


def run_down(args) -> int:
    from ..distributed.local_head import read_state, state_path, stop_head

    state = read_state()
    if state is None:
        print(f"no hwnas cluster running (no state file at {state_path()})")
        return 0
    stopped = stop_head(state)
    print(f"stopped the hwnas cluster on {state.address} ({stopped} process(es)); removed {state_path()}")
    return 0


def _age(since: float) -> str:
    s = max(0, int(time.time() - since))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"
