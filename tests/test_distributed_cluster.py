"""Multi-node placement and node loss on a ``ray.cluster_utils.Cluster`` with fake GPUs, and a driver
killed mid-run then finished with ``hwnas search --resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from test_distributed import SMALL, Background, wait_for

from hwnas.config import ConfigError, RayConfig, SearchConfig, SweepConfig
from hwnas.run import read_jsonl

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

FAST_HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def gpu_cluster():
    """A CPU-less head and three worker nodes of 1 CPU and 1 (fake) GPU each."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 * 2**20,
                                                            "_system_config": FAST_HEALTH})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=80 * 2**20) for _ in range(3)]
    ray.init(address=cluster.address)
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def test_asking_more_gpus_than_any_node_has_fails_fast(gpu_cluster, tmp_path):
    from hwnas.distributed.driver import run_on_ray

    with pytest.raises(ConfigError, match=r"2 GPU.*largest have 1 CPU and 1 GPU"):
        run_on_ray(SearchConfig(**SMALL), SweepConfig(seeds=[0, 1]), RayConfig(gpus_per_shard=2), tmp_path,
                   progress=False)


@pytest.mark.slow
def test_shards_get_their_own_gpu_and_a_removed_node_reschedules_its_shard(gpu_cluster, tmp_path):
    from hwnas.distributed.driver import run_on_ray

    cluster, nodes = gpu_cluster
    run = tmp_path / "run"
    cfg = SearchConfig(**{**SMALL, "epochs": 4})
    job = Background(run_on_ray, cfg, SweepConfig(targets=[0.08], seeds=[0, 1]),
                     RayConfig(gpus_per_shard=1, max_restarts=2), run, progress=False)
    shards = [run / "shards" / k for k in ("t0.08-s0", "t0.08-s1")]
    wait_for(lambda: all((d / "worker.json").exists() for d in shards), 240, "both shards to start")
    placed = [json.loads((d / "worker.json").read_text()) for d in shards]
    assert all(len(w["gpu_ids"]) == 1 and w["cuda_visible_devices"] == w["gpu_ids"][0] for w in placed)
    assert len({(w["node"], w["gpu_ids"][0]) for w in placed}) == 2, "two shards shared a GPU"

    victim = shards[0]
    h = victim / "history.jsonl"
    wait_for(lambda: h.exists() and h.read_text().count("\n") >= 1, 240, "the first epoch checkpoint")
    first = json.loads(h.read_text().splitlines()[0])
    node_id = placed[0]["node"]
    (node,) = [n for n in nodes if n.node_id == node_id]
    cluster.remove_node(node, allow_graceful=False)
    result = job.join(400)

    moved = json.loads((victim / "worker.json").read_text())
    assert moved["attempt"] == 2 and moved["node"] != node_id, "the shard restarted on another node"
    assert json.loads(h.read_text().splitlines()[0]) == first, "it resumed from its checkpoint"
    assert len(result.candidates) == 2 and all(c["resources"]["gpus"] == 1 for c in result.candidates)
    assert (run / "pareto.json").exists()


def _ray_processes() -> set[int]:
    pids = set()
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::"):
                pids.add(int(d.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_killed_driver_then_resume_completes_the_run(tmp_path):
    """SIGKILL the `hwnas search` driver (and its local cluster) mid-run; `--resume` finishes it."""
    run = tmp_path / "run"
    before = _ray_processes()
    args = ["search", "--space", "seed-cnn", "--dataset", "digits", "--data-limit", "300", "--epochs", "4",
            "--warmup-epochs", "1", "--fine-tune-epochs", "1", "--threads", "1", "--targets", "0.08",
            "--seeds", "0,1", "--no-progress", "--out", str(run)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    driver = subprocess.Popen([sys.executable, "-m", "hwnas.cli", *args], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        h = run / "shards" / "t0.08-s0" / "history.jsonl"
        wait_for(lambda: h.exists() and h.read_text().count("\n") >= 1, 240, "the first epoch of shard t0.08-s0")
        first = json.loads(h.read_text().splitlines()[0])
        assert not (run / "pareto.json").exists()
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the cluster it started
        driver.wait(30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    time.sleep(1)
    for pid in _ray_processes() - before:  # Ray agents that outlive a SIGKILLed driver
        os.kill(pid, signal.SIGKILL)

    out = run_cli("search", "--resume", str(run), "--no-progress", timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Pareto front" in out.stdout
    assert json.loads(h.read_text().splitlines()[0]) == first, "the resumed shard kept its finished epoch"
    assert json.loads((run / "pareto.json").read_text())
    assert {c["shard"] for c in read_jsonl(run / "candidates.jsonl")} == {"t0.08-s0", "t0.08-s1"}


def test_resume_refuses_new_settings_and_non_run_folders(tmp_path):
    out = run_cli("search", "--resume", str(tmp_path))
    assert out.returncode == 2 and "not a run folder" in out.stderr
    (tmp_path / "config.yaml").write_text("targets: [0.08]\nseeds: [0]\n")
    out = run_cli("search", "--resume", str(tmp_path), "--epochs", "5")
    assert out.returncode == 2 and "drop --epochs" in out.stderr
    out = run_cli("search", "--space", "seed-cnn")
    assert out.returncode == 2 and "--out RUN_DIR" in out.stderr
