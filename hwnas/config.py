"""Configs as dataclasses, validated in ``__post_init__`` with messages that say what to do.

YAML files and CLI flags only fill these; ``to_dict`` gives the resolved form written to
``RUN_DIR/config.yaml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


@dataclass
class SearchConfig:
    """One search (one shard): space, data, relaxation and optimiser settings.

    Weights are trained with SGD (momentum, cosine schedule) on the train split; architecture
    logits with Adam on the validation split; the first ``warmup_epochs`` train weights only.
    """

    space: str = "seed-cnn"
    space_args: dict[str, Any] = field(default_factory=dict)  # factory kwargs, e.g. mbconv widths
    subspace: dict[str, list[Any]] | None = None  # search only these values of some labels (a shard's part)
    dataset: str = "digits"
    data_root: str | None = None
    data_limit: int | None = None  # keep at most this many samples per split (quick runs)
    relaxation: str = "gumbel"
    epochs: int = 10
    warmup_epochs: int = 2
    batch_size: int = 64
    seed: int = 0
    lr: float = 0.05  # weight learning rate (SGD, cosine to 0)
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_lr: float = 0.05  # Adam on architecture logits (short searches need a brisk rate)
    arch_weight_decay: float = 1e-3
    tau_max: float | None = None  # temperature schedule; None = the relaxation's default
    tau_min: float | None = None
    learn_dropout: bool = False  # learn the space's continuous dropout rate on the validation loss
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    # ---- hardware-aware search (needs a latency table) ----
    latency_table: str | None = None  # table JSON; None with a target/hw_loss: the shipped table for this machine
    hw_loss: str | None = None  # mul (FBNet) | add (ProxylessNAS) | budget (dual ascent); None: budget if target
    target_ms: float | None = None  # latency budget; the derived arch is predicted <= it
    hw_lambda: float | None = None  # add: weight of E[T]/T_ref (0.1); budget: initial multiplier (0)
    dual_lr: float = 0.2  # budget: dual-ascent step on lambda per architecture step
    fine_tune_epochs: int = 3  # sweeps: fine-tune each derived arch from the supernet before scoring it

    def __post_init__(self) -> None:
        from .data import DATASETS
        from .relax import RELAXATIONS
        from .search.hardware import HW_LOSSES
        from .space import SPACES

        if self.hw_loss is not None:
            HW_LOSSES.get(self.hw_loss)
        if self.target_ms is not None and self.target_ms <= 0:
            raise ConfigError(f"target_ms must be > 0 (a latency budget in ms), got {self.target_ms}")
        if self.hw_loss == "budget" and self.target_ms is None:
            raise ConfigError("hw_loss 'budget' needs target_ms: pass --target-ms with the latency budget in ms")
        _positive("fine_tune_epochs", self.fine_tune_epochs, allow_zero=True)

        SPACES.get(self.space)
        RELAXATIONS.get(self.relaxation)
        DATASETS.get(self.dataset)
        _positive("epochs", self.epochs)
        _positive("warmup_epochs", self.warmup_epochs, allow_zero=True)
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs}): "
                              "otherwise the architecture is never trained")
        _positive("batch_size", self.batch_size)
        _positive("lr", self.lr)
        _positive("arch_lr", self.arch_lr)
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    @property
    def hardware_aware(self) -> bool:
        return self.latency_table is not None or self.target_ms is not None or self.hw_loss is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class TrainConfig:
    """Retraining (or fine-tuning) one fixed arch."""

    dataset: str = "digits"
    data_root: str | None = None
    data_limit: int | None = None
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        from .data import DATASETS

        DATASETS.get(self.dataset)
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("lr", self.lr)


@dataclass
class SweepConfig:
    """Which shards a run has: one search per latency target x seed x part of the space."""

    targets: list[float | None] = field(default_factory=lambda: [None])
    seeds: list[int] = field(default_factory=lambda: [0])
    shards_per_target: int = 1  # > 1 splits the space's widest label into this many sub-spaces

    def __post_init__(self) -> None:
        if not self.targets or not self.seeds:
            raise ConfigError("targets and seeds must each list at least one value")
        for t in self.targets:
            if t is not None and t <= 0:
                raise ConfigError(f"targets are latency budgets in ms and must be > 0, got {t}")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"targets and seeds must not repeat, got {self.targets} and {self.seeds}")
        _positive("shards_per_target", self.shards_per_target)


@dataclass
class RayConfig:
    """How shards run on Ray: resources per shard, restarts, which cluster.

    A shard is one Ray actor; with ``workers_per_shard`` > 1 it trains its supernet data-parallel across
    that many Ray Train workers. ``cpus_per_shard``/``gpus_per_shard`` are what each worker asks for.
    """

    enabled: bool = True  # False: shards run one after another in this process (no Ray)
    address: str | None = None  # auto | HOST:PORT | ray://...; None: $RAY_ADDRESS if set, else a local cluster
    workers_per_shard: int = 1
    cpus_per_shard: float = 1.0
    gpus_per_shard: float = 0.0
    max_restarts: int = 3  # actor restarts (a shard resumes from its last epoch checkpoint)
    max_failures: int = 3  # Ray Train worker-group restarts of a data-parallel shard
    schedule_timeout_s: float = 600.0  # a shard not started within this is an error, never a hang
    autoscaling: bool = False  # the cluster adds nodes on demand: skip the up-front fit check (the timeout stays)
    storage: str | None = None  # URI (s3://, gs://, file://) for shard folders; None: under the run folder
    num_cpus: int | None = None  # size of a local cluster hwnas starts (None: all cores)
    object_store_mb: int = 150  # object store of a local cluster (only paths and small dicts go through it)

    def __post_init__(self) -> None:
        _positive("workers_per_shard", self.workers_per_shard)
        _positive("cpus_per_shard", self.cpus_per_shard)
        _positive("gpus_per_shard", self.gpus_per_shard, allow_zero=True)
        if self.gpus_per_shard > 1 and self.gpus_per_shard != int(self.gpus_per_shard):
            raise ConfigError(f"gpus_per_shard above 1 must be a whole number (Ray's rule), got {self.gpus_per_shard}")
        _positive("max_restarts", self.max_restarts, allow_zero=True)
        _positive("max_failures", self.max_failures, allow_zero=True)
        _positive("schedule_timeout_s", self.schedule_timeout_s)
        if self.object_store_mb < 80:
            raise ConfigError(f"object_store_mb must be >= 80 (Ray's minimum is 75 MiB), got {self.object_store_mb}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RayConfig:
        return dataclasses.replace(self, **changes)


SWEEP_KEYS = tuple(f.name for f in dataclasses.fields(SweepConfig))


def split_run_dict(data: dict[str, Any], where: str) -> tuple[SearchConfig, SweepConfig, RayConfig]:
    """A run's YAML: search keys at the top level, plus targets/seeds/shards_per_target and a ``ray:`` section."""
    data = dict(data)
    ray_part = data.pop("ray", None) or {}
    if not isinstance(ray_part, dict):
        raise ConfigError(f"'ray' in {where} must be a mapping of RayConfig keys, got {ray_part!r}")
    sweep_part = {k: data.pop(k) for k in SWEEP_KEYS if k in data and data[k] is not None}
    return (from_dict(SearchConfig, data, where), from_dict(SweepConfig, sweep_part, where),
            from_dict(RayConfig, ray_part, f"the ray: section of {where}"))


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build config dataclass ``cls`` from ``data``; unknown keys are an error that lists the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} in {where}; known keys: {sorted(known)}")
    return cls(**data)


def write_yaml(path: Path, obj: dict[str, Any]) -> None:
    """Write YAML atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(obj, sort_keys=False))
    tmp.replace(path)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {p} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values")
    return data
