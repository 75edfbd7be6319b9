"""Joining or starting a Ray cluster, and checking that a shard can ever be scheduled on it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import ray

from ..config import RayConfig
from ..errors import ConfigError


@contextlib.contextmanager
def ray_session(cfg: RayConfig) -> Iterator[str]:
    """Connect for the duration of a run; yields a one-line description of the cluster.

    ``cfg.address`` (auto, HOST:PORT, ray://...) joins that cluster; else ``$RAY_ADDRESS`` (set inside a Ray
    job) is joined; else a local cluster is started with safe defaults: no dashboard, usage stats off,
    a bounded object store, token auth left as Ray sets it (on by default for local clusters since 2.59).
    A session that was already initialised in this process (a notebook, a test) is reused and kept.
    """
    if ray.is_initialized():
        yield _describe("existing session")
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
            how = f"joined {address}"
        else:
            # address="local": a new cluster, never one that `ray start` left running on this machine
            ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(), include_dashboard=False,
                     object_store_memory=cfg.object_store_mb * 2**20)
            how = "local cluster"
    except ConnectionError as err:
        raise ConfigError(f"could not connect to the Ray cluster at {address!r} ({err}); check --ray-address "
                          "(auto, HOST:6379 or ray://HOST:10001) and that the head node is running") from None
    try:
        yield _describe(how)
    finally:
        ray.shutdown()


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
