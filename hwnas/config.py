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
