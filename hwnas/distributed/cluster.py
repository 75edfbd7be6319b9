"""Joining or starting a Ray cluster, and checking that a shard can ever be scheduled on it."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import ray

from ..config import RayConfig
from ..errors import ConfigError
from . import local_head

LOOPBACK = "127.0.0.1"
# imported by every Ray worker process as it starts, so a pooled shard worker is placed on a process that has
# torch and hwnas loaded already (Ray's ``preload_python_modules``; cluster/ sets RAY_preload_python_modules)
PRELOAD = ("torch", "hwnas.distributed.actor")


@contextlib.contextmanager
def ray_session(cfg: RayConfig) -> Iterator[str]:
    """Connect for the duration of a run; yields a one-line description of the cluster.

    ``cfg.address`` (auto, HOST:PORT, ray://...) joins that cluster; else ``$RAY_ADDRESS`` (set inside a Ray
    job) is joined; else the head ``hwnas cluster up`` left running on this machine is joined when its state
    file names a live one of this Ray version (``local_head.live_head``; a stale file is removed with a
    one-line note; ``auto`` that finds that head joins it the same way); else, or with ``cfg.address ==
    "local"``, a private local cluster is started with safe defaults (the ones ``hwnas cluster up`` gives its
    head too): every Ray process listens on 127.0.0.1 only (GCS, raylet, object manager, workers, agents,
    metrics), no dashboard and no metrics collection unless ``cfg.dashboard`` (then both, on 127.0.0.1),
    usage stats off, a bounded object store, worker processes that import torch and hwnas as they start
    (``PRELOAD``), token auth as Ray sets it (on for local clusters since 2.59; never disabled here) with the
    token file made private (0600). A session that was already initialised in this process (a notebook, a test) is
    reused and kept.
    """
    if ray.is_initialized():
        yield _describe("existing session")
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    head = None
    if not address:
        head = local_head.live_head(note=_note)
    elif address == "auto" and (found := local_head.live_head()) and local_head.is_current_cluster(found):
        head = found  # `auto` finds the head `hwnas cluster up` started: joined as below (Ray alone would fail)
    target = head.address if head else address
    try:
        if head is not None:
            _token_auth_as_for_a_found_cluster()
            with _loopback_node():  # the head's node is 127.0.0.1: this driver must not take the outbound IP
                ray.init(address=head.address, _node_ip_address=LOOPBACK, log_to_driver=True)
            how = f"joined the hwnas cluster on {head.address} (hwnas cluster up)"
        elif address and address != "local":
            ray.init(address=address, log_to_driver=True)
            how = f"joined {address}"
        else:
            if address is None:
                _hint_cluster_up()
            _private_token_file(create=True)
            # address="local": a new cluster, never one that `ray start` left running on this machine
            with _loopback_node():
                ctx = ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(),
                               object_store_memory=cfg.object_store_mb * 2**20, _node_ip_address=LOOPBACK,
                               include_dashboard=cfg.dashboard, dashboard_host=LOOPBACK,
                               _system_config={"preload_python_modules": list(PRELOAD),
                                               **({} if cfg.dashboard else {"enable_metrics_collection": False})})
            _private_token_file(create=False)  # in case Ray wrote one after all (it uses the umask: 0644)
            how = f"local cluster on {LOOPBACK}"
            if cfg.dashboard and ctx.dashboard_url:
                how += f", dashboard http://{ctx.dashboard_url}"
    except ConnectionError as err:
        fix = ("run `hwnas cluster status`, or `hwnas cluster down && hwnas cluster up` to restart it, or pass "
               "--ray-address local for a private cluster") if head else (
               "check --ray-address (auto, HOST:6379 or ray://HOST:10001), that the head node is running, and for a "
               "cluster with token authentication set RAY_AUTH_MODE=token with its token in ~/.ray/auth_token or "
               "$RAY_AUTH_TOKEN")
        raise ConfigError(f"could not connect to the Ray cluster at {target!r} ({err}); {fix}") from None
    try:
        yield _describe(how)
    finally:
        ray.shutdown()  # a joined cluster (the hwnas one too) keeps running: this only disconnects


def _token_auth_as_for_a_found_cluster() -> None:
    """The head has token auth (``hwnas cluster up`` turns it on). Ray sends the token to a cluster it found by
    itself (``address="auto"``) when a token exists, but to an explicit address only with ``RAY_AUTH_MODE=token``
    set before connecting; do for the head what Ray does for a found cluster (an explicit mode is respected)."""
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@functools.cache
def _hint_cluster_up() -> None:
    """Once per process, when a sweep starts its own cluster: the long-lived alternative."""
    _note("hwnas: starting a private Ray cluster for this sweep (its start and stop add seconds to the sweep); "
          "`hwnas cluster up` keeps one running that sweeps join")


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """While a local cluster starts, let its node address stay 127.0.0.1.

    Ray 2.60 replaces a loopback ``_node_ip_address`` by the machine's outbound IP (``resolve_ip_for_localhost``)
    unless multi-node clusters are off (``ray_constants.ENABLE_RAY_CLUSTER``, read from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when ray is imported), and its servers listen on 0.0.0.0 / [::]
    (gRPC: GCS, raylet, object manager, workers; the metrics exporters on fixed ports 44217 and 44227) unless
    the node address is loopback. So both are switched for the start only: the processes ``ray.init`` starts
    inherit the variable, and joining other clusters later in this process is unaffected.
    tests/test_cluster_safety.py lists the listening sockets of a real sweep to catch a Ray upgrade that
    changes this.
    """
    from ray._private import ray_constants

    var = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    saved_flag, saved_env = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True), os.environ.get(var)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[var] = "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = saved_env


def token_file() -> Path | None:
    """The file a local cluster's auth token is read from, in Ray's order: None when ``$RAY_AUTH_TOKEN``
    holds the token itself, else ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).expanduser() if path else Path.home() / ".ray" / "auth_token"


def _private_token_file(*, create: bool) -> None:
    """Keep the token file readable by its owner only.

    Ray 2.60 writes a new ``~/.ray/auth_token`` with ``open(path, "w")`` (mode 0644 under the usual umask)
    and ``ray get-auth-token --generate`` does the same. With ``create``, a missing default token file is
    made here first, mode 0600 from the start, with a token like Ray's (256 random bits, hex); an existing
    file of ours keeps its token and loses its group/other permission bits. Best effort: a file of another
    user or on a read-only mount is left as it is.
    """
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    path = token_file()
    if path is None:
        return
    if create and not path.exists() and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
        with contextlib.suppress(OSError):  # exists by now, or unwritable: then Ray reports it
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            path.chmod(st.st_mode & 0o700)


def _describe(how: str) -> str:
    total = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return (f"Ray {ray.__version__}, {how}: {len(nodes)} node(s), {total.get('CPU', 0):g} CPU, "
            f"{total.get('GPU', 0):g} GPU")


def check_feasible(cfg: RayConfig) -> None:
    """Fail fast when no node of the cluster could ever host one shard worker (Ray would wait forever).

    Only nodes alive now are considered. On an autoscaling cluster whose GPU workers start at zero, set
    ``autoscaling`` (``--autoscaling``): the check is skipped and ``schedule_timeout_s`` bounds the wait.
    """
    if cfg.autoscaling:
        return
    cpus, gpus, workers = cfg.cpus_per_shard, cfg.gpus_per_shard, cfg.workers_per_shard
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fits = [r for r in nodes if r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus]
    most_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    if not fits:
        raise ConfigError(
            f"each shard worker asks for {cpus:g} CPU and {gpus:g} GPU, but no node of this Ray cluster has that "
            f"(the largest have {most_cpus:g} CPU and {most_gpus:g} GPU); lower --cpus-per-shard/--gpus-per-shard "
            f"(0 GPUs on CPU machines), add such nodes, or pass --autoscaling if the cluster starts them on demand")
    total = ray.cluster_resources()
    if workers * cpus > total.get("CPU", 0) or workers * gpus > total.get("GPU", 0):
        raise ConfigError(
            f"a shard of {workers} data-parallel workers needs {workers * cpus:g} CPU and {workers * gpus:g} GPU in "
            f"all, but the cluster has {total.get('CPU', 0):g} CPU and {total.get('GPU', 0):g} GPU; lower "
            "--workers-per-shard or the per-worker resources")
