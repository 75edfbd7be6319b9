"""The ready configs in configs/ load, expand into the shards they promise, and the demo's profile step
keeps a matching table instead of measuring again."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from hwnas.config import read_yaml, split_run_dict
from hwnas.latency.store import find_table
from hwnas.search.sweep import shard_specs

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_configs_for_the_demo_mnist_and_cifar10():
    assert {p.stem for p in CONFIGS} >= {"digits-demo", "mnist", "cifar10-mbconv"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_expands_into_shards(path: Path):
    cfg, sweep, ray_cfg = split_run_dict(read_yaml(path), str(path))
    specs = shard_specs(cfg, sweep)
    assert len(specs) == len(sweep.targets) * len(sweep.seeds) * sweep.shards_per_target
    assert len({s.key for s in specs}) == len(specs)
    if cfg.latency_table:
        assert (ROOT / cfg.latency_table).is_file(), f"{path.name} names a table that is not in the repo"


def test_demo_config_is_two_cpu_shards_with_two_budgets():
    cfg, sweep, ray_cfg = split_run_dict(read_yaml(ROOT / "configs/digits-demo.yaml"), "demo")
    assert (cfg.space, cfg.dataset, len(sweep.targets), len(sweep.seeds)) == ("seed-cnn", "digits", 2, 1)
    assert ray_cfg.enabled and ray_cfg.gpus_per_shard == 0 and ray_cfg.cpus_per_shard == 1


def test_cifar10_config_asks_each_shard_for_a_gpu_on_an_autoscaling_cluster():
    cfg, sweep, ray_cfg = split_run_dict(read_yaml(ROOT / "configs/cifar10-mbconv.yaml"), "cifar")
    assert cfg.space == "mbconv" and ray_cfg.gpus_per_shard == 1 and ray_cfg.autoscaling
    assert all(s.cfg.subspace for s in shard_specs(cfg, sweep)), "shards_per_target 2 gives sub-spaces"


@pytest.mark.timing
def test_profile_if_missing_keeps_a_matching_table():
    if find_table("seed-cnn") is None:
        pytest.skip("no shipped seed-cnn table matches this machine's CPU (the demo would profile it)")
    out = run_cli("profile", "--space", "seed-cnn", "--if-missing")
    assert out.returncode == 0 and "not profiling again" in out.stdout
