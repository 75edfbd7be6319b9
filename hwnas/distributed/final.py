"""Final training on Ray: each (arch, seed) unit of ``hwnas.search.finalize`` as a Ray task with a shard's
resources (``cpus_per_shard``/``gpus_per_shard``), retried on a new worker when its process dies.

The task returns its record and the driver writes it into ``RUN/final/``, so a cluster without shared
storage loses nothing and a rerun resumes with the units not yet written. Tasks queue in Ray like shards in
the pool: a finalize larger than the cluster waits for free slots.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError
from tqdm.auto import tqdm

from .._io import write_json
from ..config import FinalConfig, RayConfig, SearchConfig, from_dict
from ..errors import HwnasError
from ..search.finalize import Runner, Unit, record_path, train_unit
from .actor import assigned_gpus, worker_config
from .cluster import check_feasible, ray_session


def _train(run: str, cfg: dict[str, Any], final: dict[str, Any], unit: dict[str, Any],
           ray_cfg: dict[str, Any]) -> dict[str, Any]:
    rc = from_dict(RayConfig, ray_cfg, "ray config")
    device = "cuda" if assigned_gpus() else "cpu"
    scfg = worker_config(from_dict(SearchConfig, cfg, "final training"), rc, device)
    return train_unit(run, scfg, from_dict(FinalConfig, final, "final:"), Unit(**unit))


def ray_runner(ray_cfg: RayConfig, *, progress: bool = True) -> Runner:
    """A ``finalize`` runner that trains the units as Ray tasks (joining or starting a cluster as sweeps do)."""

    def run_units(run: Path, cfg: SearchConfig, final: FinalConfig, units: list[Unit]) -> list[dict[str, Any]]:
        with ray_session(ray_cfg) as where:
            if progress:
                print(where, flush=True)
            check_feasible(ray_cfg)
            task = ray.remote(_train).options(num_cpus=ray_cfg.cpus_per_shard, num_gpus=ray_cfg.gpus_per_shard,
                                              max_retries=ray_cfg.max_restarts)
            args = (str(run), cfg.to_dict(), dataclasses.asdict(final))
            refs = {task.remote(*args, dataclasses.asdict(u), ray_cfg.to_dict()): u for u in units}
            records, failures = [], {}
            bar = tqdm(total=len(units), desc="finalize", unit="run", disable=not (progress and sys.stderr.isatty()),
                       dynamic_ncols=True)
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                unit = refs.pop(ready[0])
                try:
                    rec = ray.get(ready[0])
                except RayError as err:
                    failures[unit.name] = str(err).strip().splitlines()[-1][:200]
                    continue
                write_json(record_path(run, unit), rec)  # the driver's copy: resumable without shared storage
                records.append(rec)
                bar.update(1)
                if progress:
                    tqdm.write(f"final {unit.name}: test acc {rec['test_accuracy']:.4f} ({rec['seconds']:.0f} s)")
            bar.close()
        if failures:
            lines = "; ".join(f"{k}: {v}" for k, v in failures.items())
            raise HwnasError(f"{len(failures)} final-training run(s) failed after their retries ({lines}); the "
                             f"{len(records)} finished ones are kept in {run}/final; rerun hwnas finalize {run}")
        return records

    return run_units
