"""Shards on a real local Ray cluster: results equal the in-process sweep, a SIGKILLed shard actor resumes,
an impossible GPU request fails fast, data-parallel shards keep identical arch parameters on every rank and
survive a Ray Train worker crash."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from hwnas.config import ConfigError, RayConfig, SearchConfig, SweepConfig, split_run_dict
from hwnas.relax import make_relaxation
from hwnas.search.derive import derive
from hwnas.search.hardware import load_latency_model
from hwnas.search.sweep import run_sweep, shard_specs
from hwnas.space import get_space

ray = pytest.importorskip("ray")

# small, real searches: 300 digits per split, 3 epochs (1 warm-up), 1 fine-tune epoch, 1 thread per shard
SMALL = dict(space="seed-cnn", dataset="digits", data_limit=300, epochs=3, warmup_epochs=1, fine_tune_epochs=1,
             threads=1)
STABLE = ("arch", "arch_id", "accuracy", "predicted_latency_ms", "supernet_val_accuracy", "shard", "target_latency_ms")


def stable(cands: list[dict]) -> list[dict]:
    """Candidate fields that must not depend on scheduling (measured latency and wall-clock do)."""
    return [{k: c[k] for k in STABLE} for c in cands]


def wait_for(pred, timeout: float, what: str, poll: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (v := pred()):
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Background:
    """Run a driver call in a thread; ``join`` re-raises what it raised."""

    def __init__(self, fn, *args, **kw) -> None:
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kw), daemon=True)
        self.thread.start()

    def _run(self, fn, args, kw) -> None:
        try:
            self.result = fn(*args, **kw)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            self.error = err

    def join(self, timeout: float):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "driver did not finish"
        if self.error:
            raise self.error
        return self.result


# ---- no Ray: shards, sub-spaces, configs ---------------------------------------------------------------
def test_shards_per_target_partitions_the_space():
    cfg = SearchConfig(**SMALL)
    specs = shard_specs(cfg, SweepConfig(targets=[0.05, 0.1], seeds=[0], shards_per_target=3))
    assert [s.key for s in specs] == ["t0.05-s0-p0", "t0.05-s0-p1", "t0.05-s0-p2",
                                      "t0.1-s0-p0", "t0.1-s0-p1", "t0.1-s0-p2"]
    parts = [s.cfg.subspace for s in specs[:3]]
    assert parts == [{"C_i": [16]}, {"C_i": [32]}, {"C_i": [64]}]
    with pytest.raises(ConfigError, match="at most 3 parts"):
        shard_specs(cfg, SweepConfig(shards_per_target=4))


def test_subspace_restricts_probabilities_sampling_and_budgeted_derivation():
    space = get_space("seed-cnn")
    relax = make_relaxation("gumbel", space)
    relax.restrict({"C_i": [16, 32]})
    with torch.no_grad():
        relax.alpha["C_i"].copy_(torch.tensor([0.0, 0.0, 5.0]))  # the excluded value would win
    assert float(relax.probs()["C_i"][2].detach()) == 0.0
    gen = torch.Generator().manual_seed(0)
    assert all(float(relax.sample(gen).choices["C_i"].weights[2].detach()) == 0.0 for _ in range(20))
    assert relax.derive()["C_i"] in (16, 32)
    model, _ = load_latency_model(SearchConfig(target_ms=0.1), space)
    arch, t = derive(model, relax.probs(), 1.0, allowed=relax.allowed)
    assert arch["C_i"] in (16, 32) and t <= 1.0
    with pytest.raises(ValueError, match="subset"):
        relax.restrict({"C_i": [48]})


def test_run_yaml_splits_into_search_sweep_and_ray_settings():
    cfg, sweep, rc = split_run_dict({"epochs": 4, "targets": [0.05, 0.1], "seeds": [0, 1],
                                     "ray": {"gpus_per_shard": 1, "workers_per_shard": 2}}, "x.yaml")
    assert cfg.epochs == 4 and sweep.targets == [0.05, 0.1] and rc.gpus_per_shard == 1 and rc.workers_per_shard == 2
    with pytest.raises(ConfigError, match="ray: section"):
        split_run_dict({"ray": {"gpu": 1}}, "x.yaml")
    with pytest.raises(ConfigError, match="whole number"):
        RayConfig(gpus_per_shard=1.5)
    with pytest.raises(ConfigError, match="must not repeat"):
        SweepConfig(seeds=[0, 0])


def test_a_storage_uri_that_cannot_be_opened_names_the_accepted_forms(tmp_path):
    from hwnas.distributed.driver import run_on_ray

    with pytest.raises(ConfigError, match=r"nosuch://b.*s3://bucket/path"):
        run_on_ray(SearchConfig(**SMALL), SweepConfig(seeds=[0, 1]), RayConfig(storage="nosuch://b/run"), tmp_path)
    assert not (tmp_path / "config.yaml").exists(), "nothing is written before the URI is checked"


# ---- a real local cluster --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same two shards, uninterrupted, one after another in this process (no Ray)."""
    cfg = SearchConfig(**SMALL)
    return run_sweep(cfg, SweepConfig(targets=[0.08], seeds=[0, 1]), tmp_path_factory.mktemp("ref"), progress=False)


@pytest.mark.ray
@pytest.mark.slow
def test_sigkilled_shard_actor_resumes_and_the_front_equals_an_uninterrupted_run(local_ray, reference, tmp_path):
    from hwnas.distributed.driver import run_on_ray

    run = tmp_path / "run"
    job = Background(run_on_ray, SearchConfig(**SMALL), SweepConfig(targets=[0.08], seeds=[0, 1]),
                     RayConfig(max_restarts=2), run, progress=False)
    shard = run / "shards" / "t0.08-s0"

    def mid_search():  # a checkpoint exists, the search is not finished
        h = shard / "history.jsonl"
        return (shard / "worker.json").exists() and h.exists() and h.read_text().count("\n") >= 1 and \
            not (shard / "candidate.json").exists()

    wait_for(mid_search, 240, "shard t0.08-s0 to checkpoint its first epoch")
    done_before = json.loads((shard / "history.jsonl").read_text().splitlines()[0])
    os.kill(json.loads((shard / "worker.json").read_text())["pid"], signal.SIGKILL)
    result = job.join(300)

    worker = json.loads((shard / "worker.json").read_text())
    assert worker["attempt"] == 2, "the actor was restarted once"
    assert json.loads((shard / "history.jsonl").read_text().splitlines()[0]) == done_before, \
        "the restarted actor resumed from the checkpoint instead of redoing epoch 0"
    # the fronts may differ where measured latencies (noise) reorder archs; what the search found may not
    assert stable(result.candidates) == stable(reference.candidates)
    written = json.loads((run / "pareto.json").read_text())
    assert stable(written) == stable(result.pareto)
    cand = json.loads((shard / "candidate.json").read_text())
    assert cand["resources"]["placement"] == "ray-actor" and cand["resources"]["attempt"] == 2
    assert cand["shard_seconds"] >= cand["search_seconds"] > 0


@pytest.mark.ray
@pytest.mark.slow
def test_shards_on_a_storage_uri_resume_from_it_in_a_fresh_scratch_folder(local_ray, reference, tmp_path):
    """With --storage the actor works in a new local scratch folder per start: a restart must pull the
    checkpoint from the URI (here file://, the same code path as s3:// or gs://)."""
    from hwnas.distributed.driver import run_on_ray

    uri_dir = tmp_path / "bucket"
    run = tmp_path / "run"
    job = Background(run_on_ray, SearchConfig(**SMALL), SweepConfig(targets=[0.08], seeds=[0, 1]),
                     RayConfig(max_restarts=2, storage=f"file://{uri_dir}"), run, progress=False)
    remote = uri_dir / "shards" / "t0.08-s1"
    h = remote / "history.jsonl"
    wait_for(lambda: h.exists() and h.read_text().count("\n") >= 1 and not (remote / "candidate.json").exists(),
             240, "shard t0.08-s1 to upload its first epoch checkpoint")
    first = json.loads(h.read_text().splitlines()[0])
    os.kill(json.loads((remote / "worker.json").read_text())["pid"], signal.SIGKILL)
    result = job.join(300)

    assert json.loads((remote / "worker.json").read_text())["attempt"] == 2
    assert json.loads(h.read_text().splitlines()[0]) == first, "resumed from the uploaded checkpoint"
    assert stable(result.candidates) == stable(reference.candidates)
    assert json.loads((uri_dir / "pareto.json").read_text()) == json.loads((run / "pareto.json").read_text())
    assert (run / "shards" / "t0.08-s1" / "checkpoint.safetensors").exists(), "RUN_DIR holds a copy for report/export"
    assert not list(uri_dir.rglob("*.part")), "no half-uploaded files are left"


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_more_gpus_than_the_cluster_has_fails_fast_with_the_fix(local_ray, tmp_path):
    from hwnas.distributed.driver import run_on_ray

    with pytest.raises(ConfigError, match=r"1 GPU.*no node.*gpus-per-shard"):
        run_on_ray(SearchConfig(**SMALL), SweepConfig(seeds=[0, 1]), RayConfig(gpus_per_shard=1), tmp_path / "a",
                   progress=False)
    with pytest.raises(ConfigError, match="workers-per-shard"):
        run_on_ray(SearchConfig(**SMALL), SweepConfig(seeds=[0, 1]), RayConfig(workers_per_shard=3), tmp_path / "b",
                   progress=False)
    # an autoscaling cluster that never adds a node that fits: bounded by the timeout, then named
    with pytest.raises(ConfigError, match=r"no shard worker was placed within 3 s.*autoscaler started no node"):
        run_on_ray(SearchConfig(**SMALL), SweepConfig(seeds=[0, 1]),
                   RayConfig(gpus_per_shard=1, autoscaling=True, schedule_timeout_s=3), tmp_path / "c", progress=False)


@pytest.mark.ray
@pytest.mark.slow
def test_six_shards_queue_on_two_cpus_past_a_timeout_shorter_than_one_shard(local_ray, tmp_path, capsys):
    """Shards outnumber the cluster's slots 3 to 1; waiting in the queue is never an error, and the pool's
    two workers run the six shards one after another (imports and data loaded once per worker)."""
    from hwnas.distributed.driver import run_on_ray

    cfg = SearchConfig(**{**SMALL, "epochs": 2, "fine_tune_epochs": 0})
    sweep = SweepConfig(targets=[0.05, 0.08], seeds=[0, 1, 2])
    result = run_on_ray(cfg, sweep, RayConfig(schedule_timeout_s=1.0), tmp_path / "q", progress=True)
    assert sorted(c["shard"] for c in result.candidates) == sorted(s.key for s in shard_specs(cfg, sweep))
    workers = [json.loads((tmp_path / "q" / "shards" / c["shard"] / "worker.json").read_text()) for c in result.candidates]
    assert len({w["pid"] for w in workers}) == 2, "two pooled workers ran all six shards"
    assert sorted(w["worker_shard"] for w in workers) == [1, 1, 2, 2, 3, 3]
    assert all(w["attempt"] == 1 for w in workers)
    out = capsys.readouterr().out
    assert "sweep: 0 done, 2 running, 4 waiting of 6 shards" in out and "sweep: 6 done, 0 running, 0 waiting" in out
    assert "ETA" in out


def test_sweep_eta_fills_the_free_lanes_with_the_waiting_shards():
    from collections import deque

    from hwnas.distributed.pool import ShardPool, Worker

    pool = object.__new__(ShardPool)  # the arithmetic only: no cluster
    now = time.monotonic()
    pool.durations, pool.queue = [100.0], deque(["a", "b", "c"])
    pool.workers = [Worker(None, None, placed=True, spec="x", started=now - 40),
                    Worker(None, None, placed=True, spec="y", started=now - 10), Worker(None, None)]
    # lanes free after 60 s and 90 s; a -> 160, b -> 190, c -> 260 (the unplaced worker is no lane)
    assert pool.eta() == pytest.approx(260, abs=1)
    pool.queue.clear()
    assert pool.eta() == pytest.approx(90, abs=1)
    pool.workers = []
    assert pool.eta() is None


def test_pool_capacity_counts_what_the_nodes_can_hold_at_once():
    from hwnas.distributed.pool import capacity, demand

    nodes = [{"CPU": 16.0, "GPU": 4.0}, {"CPU": 16.0, "GPU": 4.0}, {"CPU": 8.0}]
    assert capacity(RayConfig(cpus_per_shard=1), nodes) == 40
    assert capacity(RayConfig(cpus_per_shard=4, gpus_per_shard=1), nodes) == 8
    assert capacity(RayConfig(cpus_per_shard=1, gpus_per_shard=0.5), nodes) == 16  # two shards per GPU
    assert capacity(RayConfig(cpus_per_shard=2, gpus_per_shard=1, workers_per_shard=4), nodes) == 2
    assert capacity(RayConfig(cpus_per_shard=3), [{"CPU": 2.0}]) == 0
    assert demand(RayConfig(cpus_per_shard=2, gpus_per_shard=1, workers_per_shard=2)) == {}
    assert demand(RayConfig(cpus_per_shard=2, gpus_per_shard=0.5)) == {"CPU": 2.0, "GPU": 0.5}


def _train_workers() -> list[int]:
    """Pids of live Ray Train worker processes (their title is ``ray::RayTrainWorker...``)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"RayTrainWorker" in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return sorted(pids)


@pytest.mark.ray
@pytest.mark.slow
def test_data_parallel_shard_keeps_arch_identical_on_every_rank_and_survives_a_worker_crash(local_ray, tmp_path):
    """Two Ray Train workers (gloo) train one supernet; one is SIGKILLed after the first epoch checkpoint."""
    from hwnas.distributed.driver import run_on_ray

    run = tmp_path / "dp"
    cfg = SearchConfig(**{**SMALL, "epochs": 4})
    job = Background(run_on_ray, cfg, SweepConfig(targets=[0.08], seeds=[0]),
                     RayConfig(workers_per_shard=2, max_failures=2), run, progress=False)
    shard = run / "shards" / "t0.08-s0"
    h = shard / "history.jsonl"
    wait_for(lambda: h.exists() and h.read_text().count("\n") >= 1 and len(_train_workers()) == 2, 240,
             "the first data-parallel epoch")
    first = json.loads(h.read_text().splitlines()[0])
    os.kill(_train_workers()[-1], signal.SIGKILL)
    result = job.join(400)

    history = [json.loads(line) for line in h.read_text().splitlines()]
    assert len(history) == cfg.epochs
    assert json.loads((shard / "worker.json").read_text())["train_group_starts"] == 2, "Ray Train restarted the group"
    assert history[0] == first, "the restarted worker group resumed from the checkpoint"
    assert all(r["data_parallel_ranks"] == 2 for r in history)
    assert all(r["arch_params_max_rank_diff"] == 0.0 for r in history), "ranks diverged"
    (cand,) = result.candidates
    assert cand["resources"]["workers"] == 2 and cand["resources"]["placement"] == "ray-train"
    assert cand["predicted_latency_ms"] <= 0.08
    assert Path(shard / "arch.json").exists()
